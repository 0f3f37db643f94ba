//! FoundationDB's size limits, enforced by every backend so that code which works on the
//! embedded store keeps working on FoundationDB.

use crate::error::{Error, SizeLimit};

/// Size limits of one transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest key in bytes (FoundationDB: 10,000).
    pub max_key: usize,
    /// Longest value in bytes (FoundationDB: 100,000).
    pub max_value: usize,
    /// Most bytes of keys and values written by one transaction (FoundationDB: 10,000,000).
    pub max_transaction: usize,
}

impl Limits {
    /// FoundationDB's limits; the default of every backend.
    pub const FOUNDATIONDB: Limits = Limits {
        max_key: 10_000,
        max_value: 100_000,
        max_transaction: 10_000_000,
    };
}

impl Limits {
    /// Refuses a key to read (or a range bound) longer than a key may be: FoundationDB refuses
    /// them too, and the embedded store's library would panic on one over 64 KiB. Range bounds
    /// may be one byte longer (a prefix's end).
    pub fn check_read(&self, key: &[u8]) -> Result<(), Error> {
        if key.len() > self.max_key + 1 {
            return Err(Error::TooLarge {
                what: SizeLimit::Key,
                size: key.len(),
                limit: self.max_key,
            });
        }
        Ok(())
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::FOUNDATIONDB
    }
}

/// Running size of a transaction's writes; remembers the first limit broken so that `commit`
/// can report it (writes themselves cannot fail, as in FoundationDB).
#[derive(Debug, Default)]
pub struct WriteSize {
    bytes: usize,
    exceeded: Option<(SizeLimit, usize, usize)>,
}

impl WriteSize {
    /// Accounts for a write of `key` (and `value`, for a set) against `limits`.
    pub fn add(&mut self, limits: &Limits, key: &[u8], value: Option<&[u8]>) {
        if self.exceeded.is_some() {
            return;
        }
        let value_len = value.map_or(0, <[u8]>::len);
        self.bytes += key.len() + value_len;
        if key.len() > limits.max_key {
            self.exceeded = Some((SizeLimit::Key, key.len(), limits.max_key));
        } else if value_len > limits.max_value {
            self.exceeded = Some((SizeLimit::Value, value_len, limits.max_value));
        } else if self.bytes > limits.max_transaction {
            self.exceeded = Some((SizeLimit::Transaction, self.bytes, limits.max_transaction));
        }
    }

    /// Whether no limit was broken so far; the error naming the first broken limit otherwise.
    pub fn check(&self) -> Result<(), Error> {
        match self.exceeded {
            None => Ok(()),
            Some((what, size, limit)) => Err(Error::TooLarge { what, size, limit }),
        }
    }
}
