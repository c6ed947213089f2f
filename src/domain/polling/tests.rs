//! Given/when/then tests of the polling rules (filled in below).
