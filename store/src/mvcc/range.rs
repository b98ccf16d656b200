//! Range reads: etcd's `Range` semantics as two pure steps.
//!
//! [`select`] works on the index only (which keys at which revision, filters, sort, limit,
//! count) and is run under the index lock; [`materialize`] then fetches values by revision
//! from a storage snapshot, without the lock. Inside a transaction the same steps run over
//! the transaction's uncommitted changes too (`overlay`).
//!
//! Semantics follow etcd's applier: filters on mod/create revision and sorting force a
//! full fetch before `limit` applies; `count` is the number of keys in the range at the
//! revision, unaffected by limit and filters; a non-KEY sort target with no order sorts
//! ascending; `more` says keys beyond `limit` exist.

use bytes::Bytes;

use super::key_index::KeyAt;
use super::key_range::KeyRange;
use super::revision::Revision;
use crate::error::EtcdError;
use crate::proto::etcdserverpb::range_request::{SortOrder, SortTarget};
use crate::proto::etcdserverpb::{RangeRequest, RangeResponse, ResponseHeader};
use crate::proto::mvccpb::KeyValue;

/// What a read needs from the index.
pub trait IndexView {
    fn current_revision(&self) -> i64;
    fn compact_revision(&self) -> i64;
    /// Keys in `range` existing at `at`, key order, at most `limit` (0 = all), and the total.
    fn index_range(&self, range: &KeyRange, at: i64, limit: usize) -> (Vec<(Bytes, KeyAt)>, usize);
}

/// A key chosen by a read: its index entry, and its value when already known (a change
/// made earlier in the same transaction).
#[derive(Clone, Debug)]
pub struct Item {
    pub key: Bytes,
    pub at: KeyAt,
    pub kv: Option<KeyValue>,
}

/// The outcome of [`select`]: which keys to return, before their values are fetched.
#[derive(Debug)]
pub struct Selection {
    pub revision: i64,
    pub count: i64,
    pub items: Vec<Item>,
    pub more: bool,
    sort_by_value: Option<bool>,
    limit: usize,
    keys_only: bool,
    count_only: bool,
}

/// Resolves the revision a read is for: `0` (or less) means now.
pub fn resolve_revision(requested: i64, current: i64, compacted: i64) -> Result<i64, EtcdError> {
    if requested > current {
        return Err(EtcdError::FutureRev);
    }
    let at = if requested <= 0 { current } else { requested };
    if at < compacted {
        return Err(EtcdError::Compacted);
    }
    Ok(at)
}

/// Picks the keys a `RangeRequest` returns. `current` is the revision a read of "now"
/// sees (inside a transaction with writes, the transaction's own revision), and `overlay`
/// the transaction's changes so far, applied on top of the index when reading "now".
pub fn select(
    view: &impl IndexView,
    req: &RangeRequest,
    current: i64,
    overlay: &[Item],
) -> Result<Selection, EtcdError> {
    let at = resolve_revision(req.revision, current, view.compact_revision())?;
    let range = KeyRange::new(&req.key, &req.range_end);
    let order = SortOrder::try_from(req.sort_order).map_err(|_| EtcdError::InvalidSortOption)?;
    let target = SortTarget::try_from(req.sort_target).map_err(|_| EtcdError::InvalidSortOption)?;
    let filtered = req.min_mod_revision != 0
        || req.max_mod_revision != 0
        || req.min_create_revision != 0
        || req.max_create_revision != 0;
    let limit = usize::try_from(req.limit.max(0)).unwrap_or(usize::MAX);
    let use_overlay = at == current && !overlay.is_empty();
    // Like etcd: only an unsorted, unfiltered read may stop early (one extra for `more`).
    let index_limit =
        if order != SortOrder::None || filtered || use_overlay || limit == 0 { 0 } else { limit.saturating_add(1) };
    let index_at = if use_overlay { view.current_revision() } else { at };
    let (found, total) = view.index_range(&range, index_at, index_limit);
    let mut items: Vec<Item> = found.into_iter().map(|(key, at)| Item { key, at, kv: None }).collect();
    let mut count = total as i64;
    if use_overlay {
        merge_overlay(&mut items, &range, overlay);
        count = items.len() as i64;
    }
    if req.count_only {
        return Ok(Selection {
            revision: current,
            count,
            items: Vec::new(),
            more: false,
            sort_by_value: None,
            limit,
            keys_only: req.keys_only,
            count_only: true,
        });
    }
    items.retain(|it| keep(req, &it.at));
    // A non-KEY target with no order sorts ascending, as etcd does.
    let order = match (order, target) {
        (SortOrder::None, t) if t != SortTarget::Key => SortOrder::Ascend,
        (o, _) => o,
    };
    let mut sort_by_value = None;
    if order != SortOrder::None {
        let desc = order == SortOrder::Descend;
        match target {
            SortTarget::Value => sort_by_value = Some(desc),
            _ => sort_items(&mut items, target, desc),
        }
    }
    let mut more = false;
    if sort_by_value.is_none() && limit > 0 && items.len() > limit {
        items.truncate(limit);
        more = true;
    }
    Ok(Selection {
        revision: current,
        count,
        items,
        more,
        sort_by_value,
        limit,
        keys_only: req.keys_only,
        count_only: false,
    })
}

fn keep(req: &RangeRequest, at: &KeyAt) -> bool {
    let m = at.modified.main;
    let c = at.created.main;
    !(req.max_mod_revision != 0 && m > req.max_mod_revision
        || req.min_mod_revision != 0 && m < req.min_mod_revision
        || req.max_create_revision != 0 && c > req.max_create_revision
        || req.min_create_revision != 0 && c < req.min_create_revision)
}

fn sort_items(items: &mut [Item], target: SortTarget, desc: bool) {
    let key = |it: &Item| match target {
        SortTarget::Version => it.at.version,
        SortTarget::Create => it.at.created.main,
        SortTarget::Mod => it.at.modified.main,
        SortTarget::Key | SortTarget::Value => 0,
    };
    if target == SortTarget::Key {
        if desc {
            items.reverse();
        }
        return;
    }
    // Stable, so ties keep ascending key order in both directions (as etcd's sort does
    // for the small result sets where the order of ties is observable).
    if desc {
        items.sort_by_key(|it| std::cmp::Reverse(key(it)));
    } else {
        items.sort_by_key(key);
    }
}

/// Applies a transaction's earlier changes (puts carry a value, deletes none) to the
/// items read from the index.
fn merge_overlay(items: &mut Vec<Item>, range: &KeyRange, overlay: &[Item]) {
    for change in overlay.iter().filter(|c| range.contains(&c.key)) {
        let pos = items.binary_search_by(|it| it.key.as_ref().cmp(change.key.as_ref()));
        match (pos, &change.kv) {
            (Ok(i), Some(_)) => items[i] = change.clone(),
            (Err(i), Some(_)) => items.insert(i, change.clone()),
            (Ok(i), None) => {
                items.remove(i);
            }
            (Err(_), None) => {}
        }
    }
}

/// Completes a read: fetches the values still missing (by revision) and builds the
/// response. `fetch` returns one value per revision, in order.
pub fn materialize(
    sel: Selection,
    fetch: impl FnOnce(&[Revision]) -> Result<Vec<KeyValue>, EtcdError>,
) -> Result<RangeResponse, EtcdError> {
    let header = Some(ResponseHeader { revision: sel.revision, ..Default::default() });
    if sel.count_only {
        return Ok(RangeResponse { header, kvs: Vec::new(), more: false, count: sel.count });
    }
    let missing: Vec<Revision> = sel.items.iter().filter(|it| it.kv.is_none()).map(|it| it.at.modified).collect();
    let mut fetched = fetch(&missing)?.into_iter();
    let mut kvs = Vec::with_capacity(sel.items.len());
    for it in sel.items {
        let kv = match it.kv {
            Some(kv) => kv,
            None => fetched.next().ok_or(EtcdError::Internal("value missing for an indexed revision".into()))?,
        };
        kvs.push(kv);
    }
    let mut more = sel.more;
    if let Some(desc) = sel.sort_by_value {
        if desc {
            kvs.sort_by(|a, b| b.value.cmp(&a.value));
        } else {
            kvs.sort_by(|a, b| a.value.cmp(&b.value));
        }
        if sel.limit > 0 && kvs.len() > sel.limit {
            kvs.truncate(sel.limit);
            more = true;
        }
    }
    if sel.keys_only {
        for kv in &mut kvs {
            kv.value = Bytes::new();
        }
    }
    Ok(RangeResponse { header, kvs, more, count: sel.count })
}
