//! One watcher: what it watches, how it wants events, and turning changes into its
//! responses (filters, prev_kv, fragmenting).

use std::sync::Arc;

use bytes::Bytes;
use prost::Message;
use tokio::sync::mpsc;

use crate::mvcc::{Change, HistoryEvent, KeyRange};
use crate::proto::etcdserverpb::watch_create_request::FilterType;
use crate::proto::etcdserverpb::{ResponseHeader, WatchCreateRequest, WatchResponse};
use crate::proto::mvccpb::event::EventType;
use crate::proto::mvccpb::{Event, KeyValue};

/// A watch stream's outbound queue.
pub type Outbox = mpsc::Sender<Out>;

/// What a watch stream's queue carries: one response, or one revision's events for many
/// watchers of the stream at once, which the stream writes out as a response each.
///
/// etcd sends every watcher its own response, and so does Keel on the wire; queueing a
/// revision once per stream instead of once per watcher keeps 1,000 watchers of one key
/// on one stream from filling its queue with one event, so they stay synced instead of
/// being moved to the catch-up loop and back on every revision.
#[derive(Debug)]
pub enum Out {
    One(WatchResponse),
    Group(Group),
}

/// The same events, at one revision, for several watchers of one stream.
#[derive(Debug)]
pub struct Group {
    pub revision: i64,
    pub events: Arc<Vec<Event>>,
    pub ids: Vec<i64>,
}

impl From<WatchResponse> for Out {
    fn from(r: WatchResponse) -> Out {
        Out::One(r)
    }
}

impl Out {
    /// The watchers a group was for (none for a single response).
    pub fn into_ids(self) -> Vec<i64> {
        match self {
            Out::Group(g) => g.ids,
            Out::One(_) => Vec::new(),
        }
    }

    /// The responses this stands for, in order, as they go on the wire, their headers
    /// completed by `fill`. A group's response differs between its watchers only in the
    /// watch id, so it is encoded once ([`Wire::Member`]), not once per watcher.
    pub fn into_wire(self, fill: &dyn Fn(&mut Option<ResponseHeader>)) -> impl Iterator<Item = Wire> + use<> {
        let (one, group) = match self {
            Out::One(mut r) => {
                fill(&mut r.header);
                (Some(Wire::One(r)), None)
            }
            Out::Group(g) => {
                let mut header = Some(ResponseHeader { revision: g.revision, ..Default::default() });
                fill(&mut header);
                let shared = Shared::of(header.as_ref(), &g.events);
                (None, Some((g.ids, shared)))
            }
        };
        let many = group.into_iter().flat_map(|(ids, shared)| {
            ids.into_iter().map(move |watch_id| Wire::Member { watch_id, shared: shared.clone() })
        });
        one.into_iter().chain(many)
    }

    /// The responses this stands for, decoded: what a client reads from
    /// [`into_wire`](Self::into_wire).
    #[cfg(test)]
    pub fn into_responses(self, fill: &dyn Fn(&mut Option<ResponseHeader>)) -> Vec<WatchResponse> {
        self.into_wire(fill).map(|w| WatchResponse::decode(w.to_bytes().as_slice()).expect("decodes")).collect()
    }

    /// The responses this stands for, built rather than encoded: for a reader inside the
    /// member (the lock and election services), headers completed by `fill`.
    pub fn into_local_responses(self, fill: &dyn Fn(&mut Option<ResponseHeader>)) -> Vec<WatchResponse> {
        match self {
            Out::One(mut r) => {
                fill(&mut r.header);
                vec![r]
            }
            Out::Group(g) => {
                let mut header = Some(ResponseHeader { revision: g.revision, ..Default::default() });
                fill(&mut header);
                let events = Arc::unwrap_or_clone(g.events);
                g.ids
                    .into_iter()
                    .map(|watch_id| WatchResponse { header, watch_id, events: events.clone(), ..Default::default() })
                    .collect()
            }
        }
    }
}

/// One response as a watch stream writes it.
#[derive(Debug)]
pub enum Wire {
    /// Encoded as it is written.
    One(WatchResponse),
    /// One watcher's copy of a group's response: the group's encoding with this watcher's id
    /// put in its place.
    Member { watch_id: i64, shared: Shared },
}

/// A group's response encoded once, without its watch id: the fields before the id (the
/// header), then those after it (the events). The other fields of a group's response are
/// unset, so they take no bytes.
#[derive(Clone, Debug)]
pub struct Shared {
    bytes: Bytes,
    /// Where the watch id goes.
    split: usize,
}

impl Shared {
    fn of(header: Option<&ResponseHeader>, events: &[Event]) -> Shared {
        use prost::encoding::message;
        let mut b = bytes::BytesMut::new();
        if let Some(h) = header {
            message::encode(1, h, &mut b);
        }
        let split = b.len();
        for e in events {
            message::encode(11, e, &mut b);
        }
        Shared { bytes: b.freeze(), split }
    }
}

impl Wire {
    /// Writes the response's protobuf encoding: for a group's member, the same bytes as
    /// encoding the whole response, fields in number order.
    pub fn encode(&self, buf: &mut impl bytes::BufMut) {
        match self {
            Wire::One(r) => r.encode_raw(buf),
            Wire::Member { watch_id, shared } => {
                buf.put_slice(&shared.bytes[..shared.split]);
                // proto3 leaves a zero out, as prost does.
                if *watch_id != 0 {
                    prost::encoding::int64::encode(2, watch_id, buf);
                }
                buf.put_slice(&shared.bytes[shared.split..]);
            }
        }
    }

    #[cfg(test)]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.encode(&mut v);
        v
    }
}

/// Whether watchers with `filters` (see [`event_with`]) take a delete, or a put.
fn wants(filters: u8, delete: bool) -> bool {
    let unwanted = if delete { 2 } else { 1 };
    filters & unwanted == 0
}

/// The event a committed change makes for watchers whose filters are `filters` (bits: 1 no
/// puts, 2 no deletes, 4 previous values; see [`Watcher::filters`]), if they want it.
pub fn event_with(filters: u8, c: &Change, revision: i64) -> Option<Event> {
    let delete = c.kv.is_none();
    if !wants(filters, delete) {
        return None;
    }
    let kv = match &c.kv {
        Some(kv) => kv.clone(),
        None => KeyValue { key: c.key.clone(), mod_revision: revision, ..Default::default() },
    };
    let prev_kv = if filters & 4 != 0 { c.prev.clone() } else { None };
    let kind = if delete { EventType::Delete } else { EventType::Put };
    Some(Event { r#type: kind as i32, kv: Some(kv), prev_kv })
}

/// Identifies a watcher: its stream and its id on that stream.
pub type WatchKey = (u64, i64);

#[derive(Clone, Debug)]
pub struct Watcher {
    pub id: i64,
    pub stream: u64,
    pub range: KeyRange,
    pub no_put: bool,
    pub no_delete: bool,
    pub prev_kv: bool,
    pub progress_notify: bool,
    pub fragment: bool,
    /// Catching up: the first revision this watcher has not been sent yet. Synced: the
    /// revision from which on it takes events as they are made (not moved on as they are
    /// sent; whoever makes it catch up again starts at the later of this and where it fell
    /// behind).
    pub next_rev: i64,
    pub tx: Outbox,
}

/// The keys a create request watches. etcd reads an empty key as "\0", the smallest key; a
/// range that ends at or before its key is empty (and refused: [`KeyRange::bounds`] is `None`).
pub fn watched_range(req: &WatchCreateRequest) -> KeyRange {
    let key = if req.key.is_empty() { Bytes::from_static(b"\0") } else { req.key.clone() };
    KeyRange::new(&key, &req.range_end)
}

impl Watcher {
    pub fn new(id: i64, stream: u64, req: &WatchCreateRequest, next_rev: i64, tx: Outbox) -> Watcher {
        let has = |f: FilterType| req.filters.contains(&(f as i32));
        Watcher {
            id,
            stream,
            range: watched_range(req),
            no_put: has(FilterType::Noput),
            no_delete: has(FilterType::Nodelete),
            prev_kv: req.prev_kv,
            progress_notify: req.progress_notify,
            fragment: req.fragment,
            next_rev,
            tx,
        }
    }

    pub fn key(&self) -> WatchKey {
        (self.stream, self.id)
    }

    /// The single key this watcher watches, if it watches exactly one.
    pub fn single_key(&self) -> Option<&Bytes> {
        match &self.range {
            KeyRange::Single(k) => Some(k),
            KeyRange::Span { .. } => None,
        }
    }

    /// How this watcher filters events, as bits: see [`event_with`].
    pub fn filters(&self) -> u8 {
        u8::from(self.no_put) | u8::from(self.no_delete) << 1 | u8::from(self.prev_kv) << 2
    }

    /// The event a committed change makes for this watcher, if it wants it.
    pub fn event_for(&self, c: &Change, revision: i64) -> Option<Event> {
        event_with(self.filters(), c, revision)
    }

    /// The event a change read back from history makes for this watcher, if wanted.
    pub fn event_from_history(&self, h: &HistoryEvent) -> Option<Event> {
        if !wants(self.filters(), h.delete) {
            return None;
        }
        let kind = if h.delete { EventType::Delete } else { EventType::Put };
        let prev_kv = if self.prev_kv { h.prev.clone() } else { None };
        Some(Event { r#type: kind as i32, kv: Some(h.kv.clone()), prev_kv })
    }

    /// The responses carrying `events` (all of one or more whole revisions, the latest
    /// being `revision`). A watcher that asked for fragments gets a response too large for
    /// one message split into several, all but the last marked `fragment`, by etcd's rule
    /// (`sendFragments`): a response stays whole if it is under the limit or holds one
    /// event; otherwise each fragment takes events in order while, with the next one, it
    /// would stay under the limit (it always takes at least one). Sizes are counted as the
    /// response is sent, with the header its stream fills in.
    pub fn responses(&self, revision: i64, events: Vec<Event>, f: &Fragmenting) -> Vec<WatchResponse> {
        let whole = WatchResponse {
            header: Some(ResponseHeader { revision, ..Default::default() }),
            watch_id: self.id,
            events,
            ..Default::default()
        };
        if !self.fragment || whole.events.len() < 2 {
            return vec![whole];
        }
        let sent_header = ResponseHeader { revision, ..f.header };
        // Both headers are far under 128 bytes: their length prefixes are the same size.
        let header_extra = sent_header.encoded_len() - ResponseHeader { revision, ..Default::default() }.encoded_len();
        if whole.encoded_len() + header_extra < f.max_bytes {
            return vec![whole];
        }
        let empty =
            WatchResponse { header: Some(sent_header), watch_id: self.id, fragment: true, ..Default::default() };
        let base = empty.encoded_len();
        let mut out = Vec::new();
        let mut current: Vec<Event> = Vec::new();
        let mut size = base;
        for e in whole.events {
            let n = prost::encoding::message::encoded_len(EVENTS_TAG, &e);
            if !current.is_empty() && size + n >= f.max_bytes {
                out.push(std::mem::take(&mut current));
                size = base;
            }
            size += n;
            current.push(e);
        }
        out.push(current);
        let last = out.len() - 1;
        out.into_iter()
            .enumerate()
            .map(|(i, events)| WatchResponse {
                header: Some(ResponseHeader { revision, ..Default::default() }),
                watch_id: self.id,
                events,
                fragment: i != last,
                ..Default::default()
            })
            .collect()
    }
}

/// `WatchResponse.events`' field number.
const EVENTS_TAG: u32 = 11;

/// Where responses to watchers that asked for fragments are split.
#[derive(Clone, Debug)]
pub struct Fragmenting {
    /// etcd's limit: the member's `--max-request-bytes` plus 512 KiB of gRPC overhead.
    pub max_bytes: usize,
    /// A header as the member fills it in (its ids and term), to count sizes as sent.
    pub header: ResponseHeader,
}

impl Fragmenting {
    /// etcd's gRPC overhead allowance over `--max-request-bytes`.
    pub const GRPC_OVERHEAD: usize = 512 * 1024;

    /// etcd's limit for a member with `max_request_bytes`, its headers like `header`.
    pub fn for_member(max_request_bytes: usize, header: ResponseHeader) -> Fragmenting {
        Fragmenting { max_bytes: max_request_bytes + Self::GRPC_OVERHEAD, header }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(key: &str, value: &str, delete: bool) -> Event {
        let kv = KeyValue {
            key: Bytes::copy_from_slice(key.as_bytes()),
            value: Bytes::copy_from_slice(value.as_bytes()),
            create_revision: 3,
            mod_revision: 9,
            version: 2,
            lease: 0,
        };
        let kind = if delete { EventType::Delete } else { EventType::Put };
        Event { r#type: kind as i32, kv: Some(kv.clone()), prev_kv: delete.then_some(kv) }
    }

    #[test]
    fn a_groups_responses_are_byte_for_byte_what_encoding_each_whole_gives() {
        let events =
            Arc::new(vec![event("a", "1", false), event("b", "", true), event("", "x".repeat(300).as_str(), false)]);
        let ids = vec![0, 1, 127, 128, 1 << 40, -1, i64::MIN];
        let fill = |h: &mut Option<ResponseHeader>| {
            let h = h.get_or_insert_with(Default::default);
            (h.cluster_id, h.member_id, h.raft_term) = (11, 22, 5);
        };
        let group = Out::Group(Group { revision: 9, events: events.clone(), ids: ids.clone() });
        let wire: Vec<Wire> = group.into_wire(&fill).collect();
        assert_eq!(wire.len(), ids.len());
        for (w, id) in wire.iter().zip(&ids) {
            let whole = WatchResponse {
                header: Some(ResponseHeader { cluster_id: 11, member_id: 22, revision: 9, raft_term: 5 }),
                watch_id: *id,
                events: events.as_ref().clone(),
                ..Default::default()
            };
            assert_eq!(w.to_bytes(), whole.encode_to_vec(), "watch id {id}");
        }
        // A group with no events, and a single response, too.
        let empty: Vec<Wire> =
            Out::Group(Group { revision: 2, events: Arc::new(Vec::new()), ids: vec![4] }).into_wire(&fill).collect();
        let whole = WatchResponse {
            header: Some(ResponseHeader { cluster_id: 11, member_id: 22, revision: 2, raft_term: 5 }),
            watch_id: 4,
            ..Default::default()
        };
        assert_eq!(empty[0].to_bytes(), whole.encode_to_vec());
        let one = WatchResponse { watch_id: 3, created: true, ..Default::default() };
        let wire: Vec<Wire> = Out::One(one.clone()).into_wire(&|_| {}).collect();
        assert_eq!(wire.len(), 1);
        assert_eq!(wire[0].to_bytes(), one.encode_to_vec());
    }

    /// etcd's `sendFragments`, as a reference: sizes of whole responses as sent.
    fn etcd_fragments(header: &ResponseHeader, id: i64, events: &[Event], max: usize) -> Vec<usize> {
        let whole =
            WatchResponse { header: Some(*header), watch_id: id, events: events.to_vec(), ..Default::default() };
        if whole.encoded_len() < max || events.len() < 2 {
            return vec![events.len()];
        }
        let mut out = Vec::new();
        let mut idx = 0;
        while idx < events.len() {
            let mut cur = WatchResponse { header: Some(*header), watch_id: id, fragment: true, ..Default::default() };
            for e in &events[idx..] {
                cur.events.push(e.clone());
                if cur.events.len() > 1 && cur.encoded_len() >= max {
                    cur.events.pop();
                    break;
                }
                idx += 1;
            }
            out.push(cur.events.len());
        }
        out
    }

    #[test]
    fn fragments_split_where_etcds_do() {
        let (tx, _rx) = mpsc::channel(1);
        let req = WatchCreateRequest { key: "a".into(), range_end: "b".into(), fragment: true, ..Default::default() };
        let w = Watcher::new(7, 1, &req, 1, tx);
        let header = ResponseHeader { cluster_id: u64::MAX, member_id: 1 << 40, revision: 0, raft_term: 3 };
        let events: Vec<Event> = (0..40).map(|i| event("a", &"v".repeat(100 + 37 * i), i % 3 == 0)).collect();
        // Limits around the exact sizes of fragments of the first k events, and others.
        let at9 = ResponseHeader { revision: 9, ..header };
        let mut limits = vec![1, 200, 900, 1_000, 1_003, 2_500, 4_096, 10_000, 30_000, 200_000];
        for k in 1..6 {
            let frag = WatchResponse {
                header: Some(at9),
                watch_id: 7,
                events: events[..k].to_vec(),
                fragment: true,
                ..Default::default()
            };
            let size = frag.encoded_len();
            limits.extend([size - 1, size, size + 1]);
        }
        for max in limits {
            let f = Fragmenting { max_bytes: max, header };
            for n in [1, 2, 3, 10, 40] {
                let got = w.responses(9, events[..n].to_vec(), &f);
                let sizes: Vec<usize> = got.iter().map(|r| r.events.len()).collect();
                let at9 = ResponseHeader { revision: 9, ..header };
                assert_eq!(sizes, etcd_fragments(&at9, 7, &events[..n], max), "limit {max}, {n} events");
                let flags: Vec<bool> = got.iter().map(|r| r.fragment).collect();
                let want: Vec<bool> = (0..got.len()).map(|i| i + 1 < got.len()).collect();
                assert_eq!(flags, want, "all but the last marked");
            }
        }
        // Exactly at the limit is split too (etcd keeps whole only what is under it).
        let two = events[..2].to_vec();
        let at9 = ResponseHeader { revision: 9, ..header };
        let size =
            WatchResponse { header: Some(at9), watch_id: 7, events: two.clone(), ..Default::default() }.encoded_len();
        let f = Fragmenting { max_bytes: size, header };
        assert_eq!(w.responses(9, two.clone(), &f).len(), 2);
        let f = Fragmenting { max_bytes: size + 1, header };
        assert_eq!(w.responses(9, two, &f).len(), 1);
    }
}
