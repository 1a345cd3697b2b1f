//! Test guest: spins forever without exiting to the VMM (for timeouts and stops).
#![no_std]
#![no_main]

use ember_rt::{println, StartInfo};

ember_rt::entry!(main);

fn main(_info: &'static StartInfo) -> i32 {
    println!("spin: spinning");
    loop {
        core::hint::spin_loop();
    }
}
