//! A fixed-capacity list with no panic path: the allocator's few small
//! tables (the large cache, victims to unmap after a lock is dropped, the
//! segments held while purging the cache) use it instead of indexing
//! arrays, whose bounds checks would bring panics into allocation paths.

#[derive(Clone, Copy)]
pub(crate) struct FixedVec<T: Copy, const N: usize> {
    items: [T; N],
    len: usize,
}

impl<T: Copy, const N: usize> FixedVec<T, N> {
    pub(crate) const fn new(fill: T) -> Self {
        Self {
            items: [fill; N],
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_full(&self) -> bool {
        self.len >= N
    }

    pub(crate) fn as_slice(&self) -> &[T] {
        self.items.get(..self.len).unwrap_or(&[])
    }

    /// Appends `item`; gives it back if the list is full.
    pub(crate) fn push(&mut self, item: T) -> Result<(), T> {
        match self.items.get_mut(self.len) {
            Some(slot) => {
                *slot = item;
                self.len += 1;
                Ok(())
            }
            None => Err(item),
        }
    }

    /// Removes item `i`, moving the last one into its place.
    pub(crate) fn swap_remove(&mut self, i: usize) -> Option<T> {
        let item = *self.as_slice().get(i)?;
        let last = *self.as_slice().last()?;
        if let Some(slot) = self.items.get_mut(i) {
            *slot = last;
        }
        self.len -= 1;
        Some(item)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_and_remove_never_panic() {
        let mut v = FixedVec::<u32, 3>::new(0);
        assert_eq!(v.push(1), Ok(()));
        assert_eq!(v.push(2), Ok(()));
        assert_eq!(v.push(3), Ok(()));
        assert!(v.is_full());
        assert_eq!(v.push(4), Err(4));
        assert_eq!(v.swap_remove(0), Some(1));
        assert_eq!(v.as_slice(), &[3, 2]);
        assert_eq!(v.swap_remove(5), None);
        assert_eq!(v.swap_remove(1), Some(2));
        assert_eq!(v.swap_remove(0), Some(3));
        assert_eq!(v.len(), 0);
        assert_eq!(v.swap_remove(0), None);
    }
}
