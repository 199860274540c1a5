"""An allocation-heavy, deterministic Python workload for the LD_PRELOAD
test: many small objects, dicts, strings, growing buffers, large buffers,
and threads handing objects to each other through queues (so they are
freed on another thread than the one that made them), and many
short-lived threads. Prints digests that must match between runs on
glibc and on mapalloc. Run it with PYTHONMALLOC=malloc so that every
Python object goes through malloc."""

import collections
import hashlib
import json
import queue
import random
import sys
import threading
import zlib

THREADS = 4


def objects(seed, n):
    rng = random.Random(seed)
    people = []
    for i in range(n):
        people.append(
            {
                "id": i,
                "name": "".join(rng.choice("abcdefghij") for _ in range(rng.randint(3, 12))),
                "tags": [rng.randint(0, 50) for _ in range(rng.randint(0, 8))],
                "score": rng.random(),
                "nested": {"a": (i, str(i) * 3), "b": list(range(i % 17))},
            }
        )
    people.sort(key=lambda p: (p["name"], p["id"]))
    text = json.dumps(people, sort_keys=True)
    again = json.loads(text)
    counts = collections.Counter(t for p in again for t in p["tags"])
    return hashlib.sha256(text.encode() + repr(sorted(counts.items())).encode()).hexdigest()


def buffers(seed):
    rng = random.Random(seed)
    buf = bytearray()
    for _ in range(3000):  # grows by realloc, up to megabytes
        buf += bytes([rng.randint(0, 255)]) * rng.randint(1, 2000)
    big = [bytes(rng.getrandbits(8) for _ in range(64)) * rng.randint(2000, 40000) for _ in range(12)]
    packed = zlib.compress(bytes(buf) + b"".join(big), 1)
    return hashlib.sha256(packed).hexdigest()[:32], len(buf)


def pipeline(seed, items):
    """Producers build lists of strings; consumers on other threads take
    them over and drop them."""
    q = queue.Queue(maxsize=64)
    out = queue.Queue()

    def produce(k):
        rng = random.Random(seed * 100 + k)
        for i in range(items):
            q.put([("%d-%d-" % (k, i)) * rng.randint(1, 20) for _ in range(rng.randint(1, 30))])
        q.put(None)

    def consume():
        total = 0
        while True:
            batch = q.get()
            if batch is None:
                break
            total += sum(len(s) for s in batch)
            del batch
        out.put(total)

    producers = [threading.Thread(target=produce, args=(k,)) for k in range(THREADS)]
    consumers = [threading.Thread(target=consume) for _ in range(THREADS)]
    for t in producers + consumers:
        t.start()
    for t in producers + consumers:
        t.join()
    return sum(out.get() for _ in range(THREADS))


def main():
    results = {}
    lock = threading.Lock()

    def run(k):
        r = objects(k, 3000)
        b = buffers(k)
        with lock:
            results[k] = (r, b)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for k in sorted(results):
        print("worker", k, results[k][0][:32], results[k][1])
    print("pipeline", pipeline(7, 2000))
    # Many short-lived threads (a heap set up and abandoned each time).
    small = []
    ts = [threading.Thread(target=lambda i=i: small.append(objects(1000 + i, 20))) for i in range(64)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    print("short-lived", hashlib.sha256("".join(sorted(small)).encode()).hexdigest()[:32])
    sys.stdout.flush()


if __name__ == "__main__":
    main()
