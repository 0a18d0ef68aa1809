//! End-to-end tests: the real `longrun` binary, real processes, real HTTP on loopback, real
//! SQLite files and PostgreSQL databases, and SIGKILL for failures.

mod postgres;
mod sqlite;
mod support;
