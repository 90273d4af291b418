//! keel-sources' integration tests, one binary (so it links once): fetching against a
//! real HTTP server, and the example distribution's signatures files.

mod example_distro;
mod fetch;
mod server;
