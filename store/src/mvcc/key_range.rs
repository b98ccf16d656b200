//! The key ranges of etcd requests: one key, `[key, range_end)`, or everything from `key`.

use bytes::Bytes;
use std::ops::Bound;

/// Bounds over byte-string keys, as `BTreeMap::range` takes them.
pub type KeyBounds<'a> = (Bound<&'a [u8]>, Bound<&'a [u8]>);

/// A set of keys as etcd requests name it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum KeyRange {
    /// Exactly one key (`range_end` empty).
    Single(Bytes),
    /// `[start, end)`; `end == None` means "to the end of the keyspace" (`range_end == "\0"`).
    Span { start: Bytes, end: Option<Bytes> },
}

impl KeyRange {
    /// Interprets etcd's `key` / `range_end` pair.
    pub fn new(key: &Bytes, range_end: &Bytes) -> KeyRange {
        match range_end.as_ref() {
            [] => KeyRange::Single(key.clone()),
            [0] => KeyRange::Span { start: key.clone(), end: None },
            _ => KeyRange::Span { start: key.clone(), end: Some(range_end.clone()) },
        }
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        match self {
            KeyRange::Single(k) => k.as_ref() == key,
            KeyRange::Span { start, end } => key >= start.as_ref() && end.as_ref().is_none_or(|e| key < e.as_ref()),
        }
    }

    /// The bounds to iterate an ordered map of keys, or `None` if the range is empty.
    pub fn bounds(&self) -> Option<KeyBounds<'_>> {
        match self {
            KeyRange::Single(k) => Some((Bound::Included(k.as_ref()), Bound::Included(k.as_ref()))),
            KeyRange::Span { start, end: None } => Some((Bound::Included(start.as_ref()), Bound::Unbounded)),
            KeyRange::Span { start, end: Some(end) } => {
                (start < end).then(|| (Bound::Included(start.as_ref()), Bound::Excluded(end.as_ref())))
            }
        }
    }

    /// True if the two ranges share at least one key.
    pub fn overlaps(&self, other: &KeyRange) -> bool {
        let (a0, a1) = self.interval();
        let (b0, b1) = other.interval();
        let before = |end: &Option<Vec<u8>>, start: &[u8]| end.as_ref().is_some_and(|e| e.as_slice() <= start);
        let disjoint = before(&a1, &b0) || before(&b1, &a0);
        !disjoint && !self.is_empty() && !other.is_empty()
    }

    fn is_empty(&self) -> bool {
        self.bounds().is_none()
    }

    /// `[start, end)` with `end` exclusive; a single key k is `[k, k\0)`.
    fn interval(&self) -> (Vec<u8>, Option<Vec<u8>>) {
        match self {
            KeyRange::Single(k) => {
                let mut e = k.to_vec();
                e.push(0);
                (k.to_vec(), Some(e))
            }
            KeyRange::Span { start, end } => (start.to_vec(), end.as_ref().map(|e| e.to_vec())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(a: &'static str, b: &'static str) -> KeyRange {
        KeyRange::new(&Bytes::from(a), &Bytes::from(b))
    }

    #[test]
    fn etcd_range_end_conventions() {
        assert_eq!(span("a", ""), KeyRange::Single(Bytes::from("a")));
        assert!(KeyRange::new(&Bytes::from("a"), &Bytes::from_static(b"\0")).contains(b"zzz"));
        assert!(span("a", "b").contains(b"abc"));
        assert!(!span("a", "b").contains(b"b"));
        assert!(span("b", "a").bounds().is_none());
    }

    #[test]
    fn overlap() {
        assert!(span("a", "c").overlaps(&span("b", "")));
        assert!(!span("a", "b").overlaps(&span("b", "")));
        assert!(span("b", "").overlaps(&span("b", "")));
        assert!(!span("b", "").overlaps(&span("c", "")));
        assert!(KeyRange::new(&Bytes::from("a"), &Bytes::from_static(b"\0")).overlaps(&span("zz", "")));
    }
}
