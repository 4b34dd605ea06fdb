//! Test support for cchq's tests, kept out of the crates that ship: the repository's fixtures
//! ([`fixtures`]) and stand-in SMTP and HTTP servers on 127.0.0.1 ([`servers`]).
//!
//! A dev-dependency of `cchq-core` (its unit tests) and a dependency of the test package
//! `cchq-tests` (`tests/`, and through it `cchq-cli/tests`). It does not depend on `cchq-core`,
//! so that `cchq-core` can use it without a cycle; what needs `cchq-core`'s types (an
//! `Environment` loaded from a fixture) is a thin helper in the tests themselves.

pub mod fixtures;
pub mod servers;
