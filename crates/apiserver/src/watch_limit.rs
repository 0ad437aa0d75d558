//! How many watches one client may hold open at once: each open watch holds a [`WatchPermit`]
//! for its client (the peer IP address until authentication names users); beyond the limit a
//! watch is answered with 429 TooManyRequests, as kube-apiserver's max-in-flight filter does.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};

use crate::error::ApiError;

/// The default number of concurrent watches per client.
pub const DEFAULT_WATCHES_PER_CLIENT: usize = 64;

/// Who a watch is counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum WatchClient {
    Peer(IpAddr),
    /// The server was not started with connect info (router tests).
    Unknown,
}

impl WatchClient {
    pub fn from_peer(peer: Option<SocketAddr>) -> Self {
        peer.map_or(Self::Unknown, |addr| Self::Peer(addr.ip()))
    }

    fn describe(&self) -> String {
        match self {
            Self::Peer(ip) => format!("client {ip}"),
            Self::Unknown => "this client".into(),
        }
    }
}

/// The open watches per client.
#[derive(Debug)]
pub struct WatchLimiter {
    limit: usize,
    open: Mutex<HashMap<WatchClient, usize>>,
}

/// One open watch; dropping it (the stream ended or the client went away) frees the slot.
#[derive(Debug)]
pub struct WatchPermit {
    limiter: Arc<WatchLimiter>,
    client: WatchClient,
}

impl WatchLimiter {
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// The watches open on the server, all clients together.
    pub fn open_total(&self) -> usize {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.values().sum()
    }

    /// The watches `client` holds open.
    pub fn open_for(&self, client: &WatchClient) -> usize {
        let open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        open.get(client).copied().unwrap_or(0)
    }

    /// Takes a slot for `client`, or refuses with 429 when it holds `limit` watches already.
    pub fn acquire(self: &Arc<Self>, client: WatchClient) -> Result<WatchPermit, ApiError> {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(client.clone()).or_insert(0);
        if *count >= self.limit {
            return Err(ApiError::new(
                429,
                "TooManyRequests",
                format!(
                    "too many open watches: {} already holds {} watches (the limit per client); \
                     close some watches or retry later",
                    client.describe(),
                    self.limit
                ),
            ));
        }
        *count += 1;
        Ok(WatchPermit {
            limiter: self.clone(),
            client,
        })
    }
}

impl Drop for WatchPermit {
    fn drop(&mut self) {
        let mut open = self
            .limiter
            .open
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.client) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_beyond_the_limit_is_refused_and_freed_slots_are_reused() {
        let limiter = Arc::new(WatchLimiter::new(2));
        let a = WatchClient::Peer("127.0.0.1".parse().unwrap());
        let b = WatchClient::Peer("127.0.0.2".parse().unwrap());
        let first = limiter.acquire(a.clone()).unwrap();
        let _second = limiter.acquire(a.clone()).unwrap();
        let refused = limiter.acquire(a.clone()).unwrap_err();
        assert_eq!(refused.code, 429);
        assert_eq!(refused.reason, "TooManyRequests");
        assert!(refused.message.contains("127.0.0.1"), "{}", refused.message);
        let _other = limiter.acquire(b.clone()).unwrap();
        drop(first);
        assert_eq!(limiter.open_for(&a), 1);
        let _again = limiter.acquire(a.clone()).unwrap();
        assert_eq!(limiter.open_for(&b), 1);
    }
}
