//! Integration tests of keel-remote against real servers started by the tests: nginx with
//! WebDAV for Bazel's HTTP cache protocol. Fault injection that a real server cannot be
//! made to do on demand (answer 503 once, hang) uses small scripted TCP servers, labeled
//! as such in `support`.

mod grpc;
mod grpc_faults;
mod http;
mod remote;
mod support;
