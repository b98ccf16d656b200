//! etcd's "simple" tokens: random strings each member maps to a user in memory. A token
//! is `<16 random letters>.<log index>`, the index of the Raft entry that issued it, so a
//! member asked about a token it has not seen yet can wait until it has applied that
//! entry. A token lapses after `--auth-token-ttl` unused; a member that restarts forgets
//! its tokens, and clients authenticate again, as with etcd.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rand::Rng;

const PREFIX_LETTERS: usize = 16;

pub struct SimpleTokens {
    ttl: Duration,
    /// token → (user, when it lapses)
    live: Mutex<HashMap<String, (String, Instant)>>,
}

impl SimpleTokens {
    pub fn new(ttl: Duration) -> SimpleTokens {
        SimpleTokens { ttl, live: Mutex::new(HashMap::new()) }
    }

    /// A fresh random prefix (the proposer picks it, so every member records the same).
    pub fn new_prefix() -> String {
        let mut rng = rand::rng();
        (0..PREFIX_LETTERS)
            .map(|_| {
                let i = rng.random_range(0..52u8);
                char::from(if i < 26 { b'a' + i } else { b'A' + i - 26 })
            })
            .collect()
    }

    /// The log index a token names (its issuing entry).
    pub fn index_of(token: &str) -> Option<u64> {
        token.rsplit_once('.').and_then(|(_, i)| i.parse().ok())
    }

    pub fn assign(&self, token: String, user: String) {
        let now = Instant::now();
        let mut live = self.live.lock();
        live.retain(|_, (_, lapses)| *lapses > now);
        live.insert(token, (user, now + self.ttl));
    }

    /// The user a live token names; using it keeps it alive for another TTL.
    pub fn user(&self, token: &str) -> Option<String> {
        let now = Instant::now();
        let mut live = self.live.lock();
        match live.get_mut(token) {
            Some((user, lapses)) if *lapses > now => {
                *lapses = now + self.ttl;
                Some(user.clone())
            }
            Some(_) => {
                live.remove(token);
                None
            }
            None => None,
        }
    }

    pub fn invalidate_user(&self, user: &str) {
        self.live.lock().retain(|_, (u, _)| u != user);
    }

    pub fn clear(&self) {
        self.live.lock().clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_name_their_user_until_invalidated_or_lapsed() {
        let t = SimpleTokens::new(Duration::from_secs(60));
        let a = format!("{}.7", SimpleTokens::new_prefix());
        assert_eq!(SimpleTokens::index_of(&a), Some(7));
        t.assign(a.clone(), "alice".into());
        t.assign("b.8".into(), "bob".into());
        assert_eq!(t.user(&a).as_deref(), Some("alice"));
        t.invalidate_user("alice");
        assert_eq!(t.user(&a), None);
        assert_eq!(t.user("b.8").as_deref(), Some("bob"));
        t.clear();
        assert_eq!(t.user("b.8"), None);

        let short = SimpleTokens::new(Duration::ZERO);
        short.assign("c.9".into(), "carol".into());
        assert_eq!(short.user("c.9"), None, "a lapsed token names no one");
    }
}
