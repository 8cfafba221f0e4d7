//! Host networking: the tap devices instances' network interfaces sit on.

pub mod tap;
