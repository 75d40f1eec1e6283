//! API-made changes that survive a SIGHUP and a restart (`edgelbd --state FILE`).
//!
//! **Precedence.** The state is an overlay on the config file, by service key and by peer name. A service the API
//! created, replaced or deleted stays so across reloads and restarts; the file governs every other service. A peer
//! the API added is started at every start (replacing a file peer of the same name), one it removed is left out.
//! To give a service back to the file, apply or delete it through the API again, or remove the state file and
//! restart.
//!
//! **On disk.** The file holds [`v1::State`] (protobuf) behind a header: `EDGELBST`, a format version, the payload's
//! length and its CRC-32, so that a truncated or damaged file is recognised and refused. Every change is written
//! to a temporary file, synced, and renamed over the state file; the state it replaces stays as `FILE.prev`. A
//! damaged file found at start is set aside as `FILE.damaged` and the previous good state is used, loudly.

use crate::api::convert;
use crate::store::{key_of, ServiceKey};
use edgelb_api::v1;
use edgelb_dataplane::model::{FieldPath, Model, ServiceSpec};
use prost::Message;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"EDGELBST";
const VERSION: u32 = 1;
const HEADER: usize = 8 + 4 + 4 + 4;

/// What the API changed, as the state file keeps it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overlay {
    /// By service key: the spec the API gave it, or `None` when the API deleted it. One entry per key.
    pub services: Vec<(ServiceKey, Option<ServiceSpec>)>,
    /// Peers the API added, as it gave them (by name; the last one of a name wins).
    pub peers_added: Vec<v1::PeerConfig>,
    /// Names of peers the API removed.
    pub peers_removed: Vec<String>,
}

/// Why a state file is refused.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// It cannot be read or written.
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    /// It is not a state file, or it is cut short or damaged.
    #[error("{0}: {1}")]
    Damaged(PathBuf, String),
}

/// CRC-32 (IEEE), bit by bit: a state file is small and written rarely.
fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for b in data {
        c ^= u32::from(*b);
        for _ in 0..8 {
            c = if c & 1 != 0 { (c >> 1) ^ 0xedb8_8320 } else { c >> 1 };
        }
    }
    !c
}

impl Overlay {
    /// Record a service the API created or replaced.
    pub fn upsert(&mut self, s: &ServiceSpec) {
        let k = key_of(s);
        self.services.retain(|(x, _)| *x != k);
        self.services.push((k, Some(s.clone())));
    }

    /// Record a service the API deleted.
    pub fn delete(&mut self, k: ServiceKey) {
        self.services.retain(|(x, _)| *x != k);
        self.services.push((k, None));
    }

    /// Record a peer the API added.
    pub fn add_peer(&mut self, p: &v1::PeerConfig) {
        let name = if p.name.is_empty() { p.address.clone() } else { p.name.clone() };
        self.peers_added.retain(|x| x.name != name && !(x.name.is_empty() && x.address == name));
        self.peers_removed.retain(|x| *x != name);
        self.peers_added.push(v1::PeerConfig { name, ..p.clone() });
    }

    /// Record a peer the API removed.
    pub fn remove_peer(&mut self, name: &str) {
        self.peers_added.retain(|x| x.name != name);
        if !self.peers_removed.iter().any(|x| x == name) {
            self.peers_removed.push(name.to_string());
        }
    }

    /// Lay the overlay on a model from the file: deleted services go, the API's replace or join the file's.
    pub fn apply_to(&self, model: &mut Model) {
        for (k, s) in &self.services {
            model.services.retain(|x| key_of(x) != *k);
            if let Some(s) = s {
                model.services.push(s.clone());
            }
        }
    }

    /// The file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let st = v1::State {
            upserts: self.services.iter().filter_map(|(_, s)| s.as_ref().map(convert::service_out)).collect(),
            deletes: self.services.iter().filter(|(_, s)| s.is_none()).map(|(k, _)| convert::key_out(k)).collect(),
            peers_added: self.peers_added.clone(),
            peers_removed: self.peers_removed.clone(),
        };
        let payload = st.encode_to_vec();
        let mut out = Vec::with_capacity(HEADER + payload.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&crc32(&payload).to_be_bytes());
        out.extend_from_slice(&payload);
        out
    }

    /// Read a state file's bytes.
    ///
    /// # Errors
    /// What is wrong with them, for the operator.
    pub fn decode(b: &[u8]) -> Result<Self, String> {
        if b.len() < HEADER || &b[..8] != MAGIC {
            return Err("not an edgelbd state file (no EDGELBST header)".into());
        }
        let word = |at: usize| u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        if word(8) != VERSION {
            return Err(format!("format version {} (this edgelbd reads {VERSION})", word(8)));
        }
        let len = word(12) as usize;
        let payload = &b[HEADER..];
        if payload.len() != len {
            return Err(format!("cut short or padded: {} bytes of state where the header says {len}", payload.len()));
        }
        if crc32(payload) != word(16) {
            return Err("damaged: the checksum does not match".into());
        }
        let st = v1::State::decode(payload).map_err(|e| format!("damaged: {e}"))?;
        let mut o = Overlay::default();
        for (i, s) in st.upserts.iter().enumerate() {
            let spec = convert::service(s, &FieldPath::default().field("upserts").index(i))
                .map_err(|e| format!("a service this edgelbd no longer accepts: {e}"))?;
            o.upsert(&spec);
        }
        for (i, k) in st.deletes.iter().enumerate() {
            let key = convert::key(k, &FieldPath::default().field("deletes").index(i))
                .map_err(|e| format!("a deletion this edgelbd no longer accepts: {e}"))?;
            o.delete(key);
        }
        o.peers_added = st.peers_added;
        o.peers_removed = st.peers_removed;
        Ok(o)
    }
}

fn with_suffix(p: &Path, s: &str) -> PathBuf {
    let mut os = p.as_os_str().to_owned();
    os.push(s);
    PathBuf::from(os)
}

/// Write `o` to `path` atomically: a temporary file, synced, renamed over it; the old one stays as `path.prev`.
///
/// # Errors
/// The file system's.
pub fn save(path: &Path, o: &Overlay) -> Result<(), StateError> {
    let io = |e| StateError::Io(path.to_path_buf(), e);
    let tmp = with_suffix(path, ".tmp");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&o.encode()).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    if path.exists() {
        std::fs::rename(path, with_suffix(path, ".prev")).map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    }
    Ok(())
}

/// What loading found.
#[derive(Debug)]
pub enum Loaded {
    /// No state yet.
    Empty,
    /// The state file, read.
    Good(Overlay),
    /// The state file was damaged (set aside as `.damaged`, the reason given); the previous good state is used
    /// (empty when there was none).
    Recovered(Overlay, String),
}

/// Read the state at `path` (or, while a save was cut short between its two renames, `path.prev`).
///
/// # Errors
/// A file that cannot be read, or a damaged one that cannot be set aside.
pub fn load(path: &Path) -> Result<Loaded, StateError> {
    let prev = with_suffix(path, ".prev");
    let read = |p: &Path| std::fs::read(p).map_err(|e| StateError::Io(p.to_path_buf(), e));
    let current = if path.exists() {
        read(path)?
    } else if prev.exists() {
        return Ok(Overlay::decode(&read(&prev)?).map_or(Loaded::Empty, Loaded::Good));
    } else {
        return Ok(Loaded::Empty);
    };
    match Overlay::decode(&current) {
        Ok(o) => Ok(Loaded::Good(o)),
        Err(why) => {
            let damaged = with_suffix(path, ".damaged");
            std::fs::rename(path, &damaged).map_err(|e| StateError::Io(path.to_path_buf(), e))?;
            let fallback = if prev.exists() { Overlay::decode(&read(&prev)?).ok() } else { None };
            Ok(Loaded::Recovered(fallback.unwrap_or_default(), format!("{}: {why}", path.display())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgelb_dataplane::model::{BackendSpec, BackendState, Mode, Protocol};

    fn svc(vip: &str, backends: &[&str]) -> ServiceSpec {
        let b = |a: &&str| BackendSpec { addr: a.parse().unwrap(), port: 8080, weight: 1, state: BackendState::Active };
        ServiceSpec::new(vip.parse().unwrap(), Protocol::Tcp, Some(80), Mode::Nat, backends.iter().map(b).collect())
    }

    fn overlay() -> Overlay {
        let mut o = Overlay::default();
        o.upsert(&svc("198.19.0.1", &["198.18.2.10", "198.18.2.20"]));
        o.delete(key_of(&svc("198.19.0.2", &[])));
        o.add_peer(&v1::PeerConfig { address: "198.18.255.9".into(), remote_as: 65009, ..Default::default() });
        o.remove_peer("tor-b");
        o
    }

    #[test]
    fn the_file_round_trips_and_the_last_change_of_a_key_wins() {
        let mut o = overlay();
        o.upsert(&svc("198.19.0.1", &["198.18.2.30"]));
        assert_eq!(o.services.len(), 2, "one entry per key");
        let back = Overlay::decode(&o.encode()).unwrap();
        assert_eq!(back.services.len(), o.services.len());
        assert!(o.services.iter().all(|e| back.services.contains(e)), "{back:?}");
        assert_eq!((&back.peers_added, &back.peers_removed), (&o.peers_added, &o.peers_removed));
        assert_eq!(back.peers_added[0].name, "198.18.255.9", "a peer is named by its address when unnamed");
        let mut model =
            Model { services: vec![svc("198.19.0.1", &["198.18.2.10"]), svc("198.19.0.2", &[])], ..Default::default() };
        back.apply_to(&mut model);
        assert_eq!(model.services.len(), 1, "the deleted service is gone");
        assert_eq!(
            model.services[0].backends[0].addr.to_string(),
            "198.18.2.30",
            "the API's version replaces the file's"
        );
    }

    #[test]
    fn truncated_or_damaged_files_are_refused_with_a_reason() {
        let b = overlay().encode();
        assert!(Overlay::decode(&b[..b.len() - 3]).unwrap_err().contains("cut short"));
        let mut flipped = b.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(Overlay::decode(&flipped).unwrap_err().contains("checksum"));
        assert!(Overlay::decode(b"{\"services\": []}").unwrap_err().contains("not an edgelbd state file"));
        for cut in 0..b.len() {
            assert!(Overlay::decode(&b[..cut]).is_err(), "cut at {cut} accepted");
        }
    }

    #[test]
    fn saving_keeps_the_previous_state_and_a_damaged_file_falls_back_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        assert!(matches!(load(&path).unwrap(), Loaded::Empty));
        let mut first = Overlay::default();
        first.upsert(&svc("198.19.0.1", &["198.18.2.10"]));
        save(&path, &first).unwrap();
        let second = overlay();
        save(&path, &second).unwrap();
        assert!(
            matches!(load(&path).unwrap(), Loaded::Good(o) if o.services.len() == 2 && o.peers_removed == ["tor-b"])
        );
        // Truncate the current file: refused, set aside, the previous good state used.
        let b = std::fs::read(&path).unwrap();
        std::fs::write(&path, &b[..b.len() / 2]).unwrap();
        match load(&path).unwrap() {
            Loaded::Recovered(o, why) => {
                assert_eq!(o.services, first.services, "the previous good state");
                assert!(why.contains("cut short"), "{why}");
            }
            other => panic!("{other:?}"),
        }
        assert!(dir.path().join("state.damaged").exists() && !path.exists());
    }
}
