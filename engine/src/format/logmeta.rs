//! `log.meta`: a log's persistent identity (id and name), written once at creation with
//! temp file + fsync + rename + directory fsync.
//!
//! ```text
//! 0 magic "AOFLOGM\x01" | 8 version u32 | 12 name_len u32 | 16 log_id u64 | 24 created_ns u64
//! 32 name bytes … | crc32c u32 over everything before it
//! ```

use crate::format::{le_u32, le_u64, put_u32, put_u64};

pub const MAGIC: [u8; 8] = *b"AOFLOGM\x01";
pub const VERSION: u32 = 1;
pub const FILE_NAME: &str = "log.meta";

/// A log's directory inside its shard directory: named by its persistent id.
pub fn dir_name(log_id: u64) -> String {
    format!("log-{log_id:016x}")
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogMeta {
    pub log_id: u64,
    pub created_ns: u64,
    pub name: String,
}

impl LogMeta {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; 32 + self.name.len() + 4];
        b[0..8].copy_from_slice(&MAGIC);
        put_u32(&mut b, 8, VERSION);
        put_u32(&mut b, 12, self.name.len() as u32);
        put_u64(&mut b, 16, self.log_id);
        put_u64(&mut b, 24, self.created_ns);
        b[32..32 + self.name.len()].copy_from_slice(self.name.as_bytes());
        let n = b.len();
        let crc = crc32c::crc32c(&b[..n - 4]);
        put_u32(&mut b, n - 4, crc);
        b
    }

    pub fn decode(b: &[u8]) -> Result<Self, &'static str> {
        if b.len() < 36 || b[0..8] != MAGIC {
            return Err("not a log.meta file");
        }
        let name_len = le_u32(b, 12) as usize;
        if b.len() != 36 + name_len {
            return Err("log.meta length mismatch");
        }
        if crc32c::crc32c(&b[..b.len() - 4]) != le_u32(b, b.len() - 4) {
            return Err("log.meta checksum mismatch");
        }
        if le_u32(b, 8) != VERSION {
            return Err("unsupported log.meta version");
        }
        let name = std::str::from_utf8(&b[32..32 + name_len]).map_err(|_| "log name not UTF-8")?;
        Ok(Self {
            log_id: le_u64(b, 16),
            created_ns: le_u64(b, 24),
            name: name.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let m = LogMeta {
            log_id: 1,
            created_ns: 2,
            name: "orders-ünïcode".into(),
        };
        let b = m.encode();
        assert_eq!(LogMeta::decode(&b), Ok(m));
        for i in 0..b.len() {
            let mut d = b.clone();
            d[i] ^= 0x10;
            assert!(LogMeta::decode(&d).is_err());
        }
        assert!(LogMeta::decode(&b[..b.len() - 1]).is_err());
    }
}
