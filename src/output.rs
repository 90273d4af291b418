pub fn init_logging() {}
