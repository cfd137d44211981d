//! A token bucket per requester (user, or IP address before login) for the endpoints the
//! spec marks as rate-limited.

use std::{collections::HashMap, sync::Mutex, time::Instant};

use crate::{config::RateLimits, error::Error};

pub struct RateLimiter {
    config: RateLimits,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    pub fn new(config: &RateLimits) -> Self {
        Self {
            config: config.clone(),
            buckets: Mutex::default(),
        }
    }

    /// Takes one token for `key`, or says how long to wait for one.
    pub fn check(&self, key: &str) -> Result<(), Error> {
        if !self.config.enabled {
            return Ok(());
        }
        let burst = f64::from(self.config.burst.max(1));
        let rate = self.config.per_second.max(0.001);
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() > 100_000 {
            buckets.retain(|_, (_, t)| now.duration_since(*t).as_secs_f64() * rate < burst);
        }
        let (tokens, last) = buckets.entry(key.to_owned()).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rate).min(burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            let wait_ms = ((1.0 - *tokens) / rate * 1000.0).ceil() as u64;
            Err(Error::limit_exceeded(wait_ms))
        }
    }
}
