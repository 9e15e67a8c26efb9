//! Real test peers on 127.0.0.1: Pebble, pebble-challtestsrv, BIND.
