//! Random event sequences: never a panic, and once the core has answered
//! everything, every transaction ends within the longest timer.
