//! Leases: time-limited grants that keys can be attached to.
//!
//! The replicated part is here: which leases exist, their TTLs, and which keys each one
//! holds ([`Lessor`], changed only by applying Raft commands). Deciding when a lease has
//! expired is the leader's job; it proposes a revoke like any client would.

mod expiry;
mod lessor;

pub use expiry::{run as run_expiry, Expiry};
pub use lessor::{Lease, Lessor, MAX_LEASE_TTL};
