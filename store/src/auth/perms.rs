//! What a user may read and write: the union of their roles' key permissions, merged
//! into sorted, disjoint ranges so a check is one binary search (etcd's range permission
//! cache, an interval tree there).
//!
//! A permission is a single key (empty `range_end`), a range `[key, range_end)`, or every
//! key from `key` on (`range_end` = `"\0"`). A request on a range is permitted only if the
//! permitted ranges cover all of it, so a grant on one key never lets a from-key or prefix
//! request through.

use crate::proto::authpb::permission::Type;
use crate::proto::authpb::Permission;

/// The end of a range: a key (exclusive), or no end at all.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum End {
    Key(Vec<u8>),
    Unbounded,
}

/// Sorted, disjoint, non-adjacent ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ranges(Vec<(Vec<u8>, End)>);

impl Ranges {
    fn build(mut spans: Vec<(Vec<u8>, End)>) -> Ranges {
        spans.retain(|(begin, end)| match end {
            End::Key(e) => e > begin,
            End::Unbounded => true,
        });
        spans.sort();
        let mut merged: Vec<(Vec<u8>, End)> = Vec::with_capacity(spans.len());
        for (begin, end) in spans {
            match merged.last_mut() {
                Some((_, last_end)) if End::Key(begin.clone()) <= *last_end => {
                    if end > *last_end {
                        *last_end = end;
                    }
                }
                _ => merged.push((begin, end)),
            }
        }
        Ranges(merged)
    }

    /// The range whose start is the greatest at or before `key`.
    fn around(&self, key: &[u8]) -> Option<&(Vec<u8>, End)> {
        let i = self.0.partition_point(|(begin, _)| begin.as_slice() <= key);
        i.checked_sub(1).map(|i| &self.0[i])
    }

    /// Whether `key` alone (empty `range_end`) or all of `[key, range_end)` is covered;
    /// `range_end` = `"\0"` means every key from `key` on.
    ///
    /// A range that ends at or before its key holds no key; etcd's interval tree permits
    /// it exactly when its key alone is permitted, and so does this.
    pub fn covers(&self, key: &[u8], range_end: &[u8]) -> bool {
        let Some((_, end)) = self.around(key) else { return false };
        let wanted = match range_end {
            [0] => End::Unbounded,
            e if e <= key => return *end > End::Key(key.to_vec()),
            e => End::Key(e.to_vec()),
        };
        *end >= wanted
    }
}

/// One user's merged permissions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserPerms {
    pub read: Ranges,
    pub write: Ranges,
}

impl UserPerms {
    pub fn merge<'a>(perms: impl IntoIterator<Item = &'a Permission>) -> UserPerms {
        let (mut read, mut write) = (Vec::new(), Vec::new());
        for p in perms {
            let end = match &p.range_end[..] {
                [] => {
                    let mut next = p.key.to_vec();
                    next.push(0);
                    End::Key(next)
                }
                [0] => End::Unbounded,
                e => End::Key(e.to_vec()),
            };
            let span = (p.key.to_vec(), end);
            match Type::try_from(p.perm_type) {
                Ok(Type::Read) => read.push(span),
                Ok(Type::Write) => write.push(span),
                Ok(Type::Readwrite) => {
                    read.push(span.clone());
                    write.push(span);
                }
                Err(_) => {}
            }
        }
        UserPerms { read: Ranges::build(read), write: Ranges::build(write) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perm(t: Type, key: &str, end: &[u8]) -> Permission {
        Permission { perm_type: t as i32, key: key.to_string().into(), range_end: end.to_vec().into() }
    }

    #[test]
    fn a_single_key_grant_covers_that_key_only() {
        let p = UserPerms::merge(&[perm(Type::Read, "/a", b"")]);
        assert!(p.read.covers(b"/a", b""));
        assert!(!p.read.covers(b"/a0", b""));
        assert!(!p.read.covers(b"/", b""));
        assert!(!p.write.covers(b"/a", b""));
        // [/a, /a\0) is exactly the key; anything wider is not covered.
        assert!(p.read.covers(b"/a", b"/a\0"));
        assert!(!p.read.covers(b"/a", b"/b"));
        assert!(!p.read.covers(b"/a", b"\0"), "from-key on a one-key grant");
    }

    #[test]
    fn ranges_must_be_covered_whole_by_the_union_of_grants() {
        let p = UserPerms::merge(&[
            perm(Type::Readwrite, "/p/", b"/p0"),
            perm(Type::Write, "/x", b"/y"),
            perm(Type::Write, "/y", b"/z"),
        ]);
        assert!(p.read.covers(b"/p/", b"/p0"));
        assert!(p.read.covers(b"/p/a", b"/p/b"));
        assert!(!p.read.covers(b"/p", b"/p0"));
        assert!(!p.read.covers(b"/p/", b"/p1"));
        // Two adjacent grants cover their union.
        assert!(p.write.covers(b"/x", b"/z"));
        assert!(p.write.covers(b"/xa", b""));
        assert!(!p.write.covers(b"/x", b"/z0"));
        assert!(!p.read.covers(b"/x", b""));
    }

    #[test]
    fn from_key_grants_cover_every_later_key() {
        let p = UserPerms::merge(&[perm(Type::Read, "/f", b"\0")]);
        assert!(p.read.covers(b"/f", b"\0"));
        assert!(p.read.covers(b"/g", b"\0"));
        assert!(p.read.covers(b"\xff\xff", b""));
        assert!(!p.read.covers(b"/e", b"\0"));
        assert!(!p.read.covers(b"/e", b"/g"));
    }

    #[test]
    fn gaps_between_grants_are_not_covered() {
        let p = UserPerms::merge(&[perm(Type::Read, "a", b"c"), perm(Type::Read, "d", b"f")]);
        assert!(p.read.covers(b"a", b"c"));
        assert!(!p.read.covers(b"a", b"e"));
        assert!(!p.read.covers(b"c", b""));
        assert!(p.read.covers(b"e", b""));
    }

    mod model {
        use proptest::prelude::*;

        use super::*;

        /// Where a grant or a request ends.
        #[derive(Clone, Debug)]
        enum Until {
            Key,
            Before(String),
            Everything,
        }

        fn end_bytes(u: &Until) -> Vec<u8> {
            match u {
                Until::Key => Vec::new(),
                Until::Before(e) => e.as_bytes().to_vec(),
                Until::Everything => vec![0],
            }
        }

        /// Short keys over three letters, so grants often meet, overlap and nest.
        fn key() -> impl Strategy<Value = String> {
            "[abc]{1,2}"
        }

        fn until() -> impl Strategy<Value = Until> {
            prop_oneof![Just(Until::Key), key().prop_map(Until::Before), Just(Until::Everything)]
        }

        /// Every key of up to three bytes over the grants' alphabet and the byte 0, which
        /// includes every end a grant can have (a key and `\0`), and one key past all of
        /// them, which only a grant without an end covers: a range is covered exactly if
        /// each of these in it is.
        fn universe() -> Vec<Vec<u8>> {
            let mut all: Vec<Vec<u8>> = vec![Vec::new()];
            let mut layer: Vec<Vec<u8>> = vec![Vec::new()];
            for _ in 0..3 {
                layer =
                    layer.iter().flat_map(|k| [0u8, b'a', b'b', b'c'].map(|c| [k.as_slice(), &[c]].concat())).collect();
                all.extend(layer.iter().cloned());
            }
            all.push(b"cccc".to_vec());
            all.retain(|k| !k.is_empty());
            all
        }

        fn inside(x: &[u8], key: &[u8], end: &[u8]) -> bool {
            match end {
                [] => x == key,
                [0] => x >= key,
                e => x >= key && x < e,
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]
            #[test]
            fn covers_agrees_with_checking_every_key(
                grants in proptest::collection::vec((key(), until()), 0..6),
                key in key(),
                end in until(),
            ) {
                let perms: Vec<Permission> = grants
                    .iter()
                    .map(|(k, u)| perm(Type::Read, k, &end_bytes(u)))
                    .collect();
                let ranges = UserPerms::merge(&perms).read;
                let end = end_bytes(&end);
                prop_assume!(end.is_empty() || end == [0] || end.as_slice() > key.as_bytes());
                let granted = |x: &[u8]| perms.iter().any(|p| inside(x, &p.key, &p.range_end));
                let expected = universe()
                    .iter()
                    .filter(|x| inside(x, key.as_bytes(), &end))
                    .all(|x| granted(x));
                prop_assert_eq!(ranges.covers(key.as_bytes(), &end), expected);
            }
        }
    }
}
