//! Provider `ssh`: hosts reached with russh.
