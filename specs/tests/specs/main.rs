//! keel-specs' integration tests, one binary (so it links once): hostile specs read with
//! containment, and the property that reading never panics.

mod hostile;
mod never_panics;
