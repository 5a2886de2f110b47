//! What the daemon and `chiso status` share about scheduling: when each job is planned to fire
//! ([`planned`]), the history of fires and what became of them ([`history`]), and the lock that
//! keeps one daemon per warehouse ([`lock`]). The daemon itself is [`crate::serve`].

pub mod changes;
pub mod history;
pub mod lock;
pub mod planned;

pub use history::{FireEvent, FireHow, FireOutcome, FireRecord, History};
pub use lock::{DaemonLock, DaemonLockError, Holder};
pub use planned::Schedule;
