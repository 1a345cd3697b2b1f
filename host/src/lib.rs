//! ember's host side: the `emberd` supervisor and the `ember` CLI.
