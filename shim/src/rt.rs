//! The start and the end of the `plexus` program without libc: what crt1.o, `exit` and
//! `execve` would be. The only unsafe code of the program, kept here, small and explained.
//!
//! Why: the runtime starts `plexus` for every CNI call, and on this project's VM a static
//! glibc program spends about a third of a millisecond before `main` (its start probes the CPU
//! with some fifty CPUID instructions, and each traps to the hypervisor: 5.5 us apiece), and
//! std's runtime another tenth (the main thread's stack from /proc/self/maps, an alternate
//! signal stack). This start does none of that: the kernel hands over the stack, and `main`
//! runs. Everything else the program does goes through rustix's safe system calls.
//!
//! The binary is linked static and not position-independent (build.rs), so nothing has to be
//! relocated before this code runs; it has no thread-local storage and no constructors.
#![allow(unsafe_code)]

use core::ffi::{CStr, c_char};

use rustix::fd::BorrowedFd;

#[cfg(not(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64"))))]
compile_error!("the plexus binary starts itself on Linux x86-64 and aarch64 only");

// The kernel starts the program here with the stack pointer at argc, followed by argv's
// pointers, a null, envp's pointers, a null (and the auxiliary vector). The stack is handed
// to `entry` as its first argument; the frame pointer is cleared so that backtraces end here.
#[cfg(target_arch = "x86_64")]
core::arch::global_asm!(
    ".globl _start",
    ".type _start,@function",
    "_start:",
    "xor ebp, ebp",
    "mov rdi, rsp",
    // The ABI wants the stack 16-byte aligned at a call.
    "and rsp, -16",
    "call {entry}",
    "ud2",
    entry = sym entry,
);

#[cfg(target_arch = "aarch64")]
core::arch::global_asm!(
    ".globl _start",
    ".type _start,%function",
    "_start:",
    "mov x29, xzr",
    "mov x30, xzr",
    // The kernel leaves sp 16-byte aligned, as the ABI wants it.
    "mov x0, sp",
    "bl {entry}",
    "brk #1",
    entry = sym entry,
);

/// What the program was started with.
#[derive(Debug, Clone, Copy)]
pub struct Start {
    argc: usize,
    argv: *const *const c_char,
    envp: *const *const c_char,
}

/// Called by `_start` with the initial stack; never returns.
extern "C" fn entry(stack: *const usize) -> ! {
    // SAFETY: `stack` is the initial stack as the kernel lays it out (see `_start`): argc,
    // then argc pointers and a null, then the environment's pointers and a null.
    let start = unsafe {
        let argc = *stack;
        let argv = stack.add(1).cast::<*const c_char>();
        Start { argc, argv, envp: argv.add(argc + 1) }
    };
    exit(crate::main(start))
}

impl Start {
    /// argv[0] (empty when the caller gave no arguments at all).
    pub fn arg0(&self) -> &'static [u8] {
        if self.argc == 0 {
            return b"";
        }
        // SAFETY: argv[0] exists (argc > 0) and, as every argument, is a NUL-terminated string
        // in the stack's argument area, which lives as long as the process.
        unsafe { CStr::from_ptr(*self.argv) }.to_bytes()
    }

    /// The environment's entries, `NAME=value` each.
    pub fn env(&self) -> impl Iterator<Item = &'static [u8]> {
        let envp = self.envp;
        (0..).map_while(move |i| {
            // SAFETY: envp is a null-terminated array of pointers to NUL-terminated strings
            // that live as long as the process; the walk stops at the null.
            unsafe {
                let entry = *envp.add(i);
                (!entry.is_null()).then(|| CStr::from_ptr(entry).to_bytes())
            }
        })
    }

    /// Replaces this process with `program`, called `arg0`, with this process's environment;
    /// returns only when the kernel refuses, with why.
    pub fn exec(&self, program: &CStr, arg0: &CStr) -> rustix::io::Errno {
        let argv = [arg0.as_ptr(), core::ptr::null()];
        // SAFETY: the path and argv[0] are NUL-terminated strings, argv and envp are
        // null-terminated arrays of such; all of them outlive the call.
        let ret = unsafe { execve(program.as_ptr(), argv.as_ptr(), self.envp) };
        rustix::io::Errno::from_raw_os_error(i32::try_from(-ret).unwrap_or(i32::MAX))
    }
}

/// The standard descriptors: the runtime's pipes, open for the program's whole (single-threaded)
/// life, which never closes them.
pub fn stdin() -> BorrowedFd<'static> {
    // SAFETY: see above.
    unsafe { rustix::stdio::stdin() }
}

/// See [`stdin`].
pub fn stdout() -> BorrowedFd<'static> {
    // SAFETY: see [`stdin`].
    unsafe { rustix::stdio::stdout() }
}

/// Ends the process with `status`. Nothing is buffered: every write is a system call.
pub fn exit(status: u8) -> ! {
    // SAFETY: exit_group takes one integer and does not return.
    unsafe {
        #[cfg(target_arch = "x86_64")]
        core::arch::asm!("syscall", in("rax") 231usize, in("rdi") usize::from(status), options(noreturn, nostack));
        #[cfg(target_arch = "aarch64")]
        core::arch::asm!("svc 0", in("x8") 94usize, in("x0") usize::from(status), options(noreturn, nostack));
    }
}

/// execve(2); the negative errno when it returns.
///
/// # Safety
/// As execve(2): `path` NUL-terminated, `argv` and `envp` null-terminated arrays of
/// NUL-terminated strings.
unsafe fn execve(path: *const c_char, argv: *const *const c_char, envp: *const *const c_char) -> isize {
    let ret: isize;
    // SAFETY: the caller's; the registers the kernel clobbers are declared.
    unsafe {
        #[cfg(target_arch = "x86_64")]
        core::arch::asm!(
            "syscall",
            inlateout("rax") 59isize => ret,
            in("rdi") path,
            in("rsi") argv,
            in("rdx") envp,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
        #[cfg(target_arch = "aarch64")]
        core::arch::asm!(
            "svc 0",
            in("x8") 221usize,
            inlateout("x0") path as isize => ret,
            in("x1") argv,
            in("x2") envp,
            options(nostack),
        );
    }
    ret
}

/// The personality routine the prebuilt `alloc` refers to. Never called: the program is built
/// with `-C panic=abort` and its panic handler exits, so nothing ever unwinds.
#[unsafe(no_mangle)]
extern "C" fn rust_eh_personality() {}

/// The unwinder's resume, which the prebuilt `alloc`'s landing pads call; never reached, as
/// nothing unwinds (see above).
#[unsafe(no_mangle)]
#[allow(non_snake_case)]
extern "C" fn _Unwind_Resume() -> ! {
    exit(134)
}

// The memory functions the compiler calls (copies, moves, fills, comparisons), which libc
// would define. Byte loops: the program copies a few kB. The empty `asm!` in each loop keeps
// the optimiser from recognising the loop as the very function it is defining.

/// memcpy(3): a move whose ends do not overlap.
#[unsafe(no_mangle)]
unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, len: usize) -> *mut u8 {
    // SAFETY: the caller's, which are memmove's and more.
    unsafe { memmove(dst, src, len) }
}

/// memmove(3).
#[unsafe(no_mangle)]
unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, len: usize) -> *mut u8 {
    // SAFETY: the caller's: `len` bytes readable at `src`, writable at `dst`; when `dst` is
    // above `src` the copy runs from the end, so an overlap is read before it is written.
    unsafe {
        if dst.addr() <= src.addr() {
            for i in 0..len {
                *dst.add(i) = *src.add(i);
                core::arch::asm!("", options(nomem, nostack, preserves_flags));
            }
        } else {
            for i in (0..len).rev() {
                *dst.add(i) = *src.add(i);
                core::arch::asm!("", options(nomem, nostack, preserves_flags));
            }
        }
    }
    dst
}

/// memset(3).
#[unsafe(no_mangle)]
unsafe extern "C" fn memset(dst: *mut u8, fill: i32, len: usize) -> *mut u8 {
    // The byte is the int's low byte, as C converts it.
    let byte = fill.to_le_bytes()[0];
    // SAFETY: the caller's: `len` bytes writable at `dst`.
    unsafe {
        for i in 0..len {
            *dst.add(i) = byte;
            core::arch::asm!("", options(nomem, nostack, preserves_flags));
        }
    }
    dst
}

/// memcmp(3).
#[unsafe(no_mangle)]
unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, len: usize) -> i32 {
    // SAFETY: the caller's: `len` bytes readable at both.
    unsafe {
        for i in 0..len {
            let (x, y) = (*a.add(i), *b.add(i));
            if x != y {
                return i32::from(x) - i32::from(y);
            }
            core::arch::asm!("", options(nomem, nostack, preserves_flags));
        }
    }
    0
}

/// bcmp(3): memcmp, of which only zero or not counts.
#[unsafe(no_mangle)]
unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, len: usize) -> i32 {
    // SAFETY: the caller's, as memcmp's.
    unsafe { memcmp(a, b, len) }
}

/// strlen(3) (what `CStr::from_ptr` measures with).
#[unsafe(no_mangle)]
unsafe extern "C" fn strlen(s: *const c_char) -> usize {
    let mut len = 0;
    // SAFETY: the caller's: `s` is NUL-terminated.
    unsafe {
        while *s.add(len) != 0 {
            len += 1;
            core::arch::asm!("", options(nomem, nostack, preserves_flags));
        }
    }
    len
}
