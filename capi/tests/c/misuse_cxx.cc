// C++ deallocation misuse, one case per run (as misuse.c): wrong-size and
// wrong-form deletes, which reach the allocator through libstdc++'s
// `operator new` (our malloc) and our exported `operator delete`s.
// Built with sized deallocation (C++14 and later). Written for mapalloc's
// tests.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <new>
#include <string>
#include <vector>

static void *volatile sink;
template <class T> static T *opaque(T *p) {
    sink = p;
    return static_cast<T *>(sink);
}

struct Base {
    int a = 1;
};
struct Derived : Base {
    char big[200] = {};
};
struct WithDtor {
    int x = 2;
    ~WithDtor() { sink = this; }
};
struct Poly {
    virtual ~Poly() = default;
    int a = 1;
};
struct PolyDerived : Poly {
    char big[300] = {};
};
struct alignas(64) Wide {
    char c[100];
};

// `delete` of a derived object through a base without a virtual
// destructor: the sized delete says sizeof(Base).
static void delete_base_smaller() {
    Base *b = opaque(static_cast<Base *>(new Derived));
    delete b;
}
// `delete[]` of an object made with `new`: with a destructor, the array
// cookie is read from before the object and an interior pointer freed.
static void delete_array_of_new() {
    WithDtor *p = opaque(new WithDtor);
    delete[] p;
}
// `delete` of an array made with `new[]`.
static void delete_of_new_array() {
    int *p = opaque(new int[50]);
    delete p;
}
static void delete_of_new_array_dtor() {
    WithDtor *p = opaque(new WithDtor[10]);
    delete p;
}
// A sized delete naming the wrong size.
static void sized_delete_wrong() {
    void *p = ::operator new(100);
    ::operator delete(opaque(p), 50);
}
// An aligned sized delete whose alignment the block does not have.
static void aligned_delete_wrong_alignment() {
    void *p = ::operator new(100);
    std::size_t align = std::size_t(2) << __builtin_ctzl((std::uintptr_t)p);
    ::operator delete(opaque(p), 100, std::align_val_t(align));
}
static void double_delete() {
    std::string *s = new std::string(100, 'x');
    delete s;
    delete opaque(s);
}

// Valid uses, which must pass in hardened mode too.
static void valid() {
    Poly *p = new PolyDerived;
    delete p;
    auto *w = new Wide;
    delete w;
    auto *ws = new Wide[7];
    delete[] ws;
    auto *d = new WithDtor[9];
    delete[] d;
    int *z = new int[0];
    delete[] z;
    auto *e = new (std::nothrow) Base;
    delete e;
    void *raw = ::operator new(33, std::align_val_t(256));
    ::operator delete(raw, 33, std::align_val_t(256));
    raw = ::operator new[](1000, std::align_val_t(4096));
    ::operator delete[](raw, std::align_val_t(4096));
    std::map<std::string, std::vector<int>> m;
    for (int i = 0; i < 5000; i++)
        m[std::to_string(i)].resize(i % 41);
    auto sp = std::make_shared<std::vector<std::string>>(100, "abc");
    std::unique_ptr<char[]> up(new char[12345]);
}

struct kase {
    const char *name;
    void (*run)();
};
#define K(f) {#f, f}
static const kase cases[] = {
    K(delete_base_smaller), K(delete_array_of_new), K(delete_of_new_array),
    K(delete_of_new_array_dtor), K(sized_delete_wrong), K(aligned_delete_wrong_alignment),
    K(double_delete), K(valid),
};

int main(int argc, char **argv) {
    std::size_t n = sizeof cases / sizeof cases[0];
    if (argc == 2 && std::strcmp(argv[1], "--list") == 0) {
        for (std::size_t i = 0; i < n; i++)
            std::puts(cases[i].name);
        return 0;
    }
    for (std::size_t i = 0; argc == 2 && i < n; i++) {
        if (std::strcmp(argv[1], cases[i].name) == 0) {
            cases[i].run();
            std::puts("reached the end");
            return 0;
        }
    }
    std::fprintf(stderr, "usage: misuse_cxx <case> | --list\n");
    return 2;
}
