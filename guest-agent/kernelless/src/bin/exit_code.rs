//! Test guest: exits with the number given as its arguments (e.g. `42`).
#![no_std]
#![no_main]

use ember_rt::{println, StartInfo};

ember_rt::entry!(main);

fn main(info: &'static StartInfo) -> i32 {
    match info.args().trim().parse::<i32>() {
        Ok(code) => code,
        Err(_) => {
            println!("exit_code: expected a number, got {:?}", info.args());
            2
        }
    }
}
