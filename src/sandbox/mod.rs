//! Child processes run as if on a smaller machine, and named for how they ended: the caps (CPU
//! affinity and threads, a memory cgroup, a CPU quota) enforced on a child from its first
//! instruction ([`caps`]), and the [`Status`](crate::record::status::Status) a child that did not
//! succeed gets ([`failure`]: only the memory cap's kill "does not fit"; a crash, an error and a
//! timeout are named as such). The children themselves are typed values ([`child`]), their
//! command lines written in one place.
//!
//! `bench` measures under it, `sweep` isolates each variant in it, and `generate --profile` talks
//! through it. Uses `engine` (its log's child mode), `record` (statuses), `util`.

pub mod caps;
pub mod child;
pub mod failure;
