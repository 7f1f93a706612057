//! Real servers and service processes that fault tests start, stop, kill and
//! restart themselves: a private PostgreSQL cluster, a private Redis, a
//! service binary run as a child process.

pub mod postgres;
pub mod process;
pub mod redis;
