//! The seccomp denylist applied to every sandboxed command, built in Rust with `seccompiler`.
//!
//! The program is a classic-BPF seccomp filter that bubblewrap loads with `--seccomp FD` right
//! before it executes the command (after its own namespace setup, which needs some of these
//! calls). It allows everything except:
//!
//! * debugging and reading other processes: `ptrace`, `process_vm_readv/writev`,
//!   `pidfd_getfd`;
//! * file-system topology: `mount`, `umount2`, `pivot_root`, `chroot`, the new mount API
//!   (`fsopen`, `fsconfig`, `fsmount`, `fspick`, `move_mount`, `open_tree`, `mount_setattr`),
//!   `open_by_handle_at`/`name_to_handle_at` (file handles bypass path checks);
//! * namespaces: `unshare`, `setns`, and `clone` with `CLONE_NEWUSER` (no new user namespace,
//!   which is where unprivileged kernel attack surface lives); `clone3` returns `ENOSYS` (its
//!   flags live in memory a filter cannot read), which makes glibc fall back to `clone`;
//! * kernel attack surface: `bpf`, `perf_event_open`, `userfaultfd`, `io_uring_*`, `keyctl`,
//!   `add_key`, `request_key`, `fanotify_init`, `lookup_dcookie`;
//! * administration: module loading (`init_module`, `finit_module`, `delete_module`),
//!   `kexec_load`, `kexec_file_load`, `reboot`, `swapon`, `swapoff`, `acct`, `quotactl*`,
//!   `syslog`, `vhangup`, clock setting (`settimeofday`, `clock_settime`, `clock_adjtime`,
//!   `adjtimex`); on x86-64 also `iopl`, `ioperm`, `modify_ldt`, `uselib`;
//! * terminal injection: `ioctl(TIOCSTI)` and `ioctl(TIOCLINUX)`.
//!
//! Denied calls fail with `EPERM`. A syscall made with another architecture's calling
//! convention (32-bit `int 0x80` on x86-64) kills the process, so the denylist cannot be
//! bypassed through the compat table; on x86-64 the x32 range (`nr >= 0x4000_0000`) is denied
//! as well.
//!
//! `seccompiler` builds everything except two instructions groups it cannot express (a range
//! test on the syscall number, and a second return action), which are spliced in by hand right
//! after its architecture check.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch, sock_filter,
};

use crate::SandboxError;

// Classic BPF opcodes (linux/bpf_common.h).
/// BPF_LD | BPF_W | BPF_ABS (0x00 | 0x00 | 0x20).
const BPF_LD_W_ABS: u16 = 0x20;
const BPF_JMP_JEQ_K: u16 = 0x05 | 0x10;
#[cfg(target_arch = "x86_64")]
const BPF_JMP_JGE_K: u16 = 0x05 | 0x30;
const BPF_RET_K: u16 = 0x06;
/// Offset of `arch` in `struct seccomp_data`.
const SECCOMP_DATA_ARCH: u32 = 4;
/// Offset of `nr` in `struct seccomp_data`.
const SECCOMP_DATA_NR: u32 = 0;
/// `ioctl` requests that inject input into a terminal (asm-generic values, used by x86-64 and
/// aarch64).
const TIOCSTI: u64 = 0x5412;
const TIOCLINUX: u64 = 0x541C;

fn errno(e: i32) -> u32 {
    // SECCOMP_RET_DATA is the low 16 bits.
    libc::SECCOMP_RET_ERRNO | (e as u32 & 0xffff)
}

fn seccomp_err(e: impl std::fmt::Display) -> SandboxError {
    SandboxError::Unavailable(format!("cannot build the seccomp filter: {e}"))
}

/// System calls denied outright (`EPERM`), whatever their arguments.
fn denied_syscalls() -> Vec<i64> {
    #[allow(unused_mut)]
    let mut list = vec![
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_pidfd_getfd,
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_chroot,
        libc::SYS_fsopen,
        libc::SYS_fsconfig,
        libc::SYS_fsmount,
        libc::SYS_fspick,
        libc::SYS_move_mount,
        libc::SYS_open_tree,
        libc::SYS_mount_setattr,
        libc::SYS_open_by_handle_at,
        libc::SYS_name_to_handle_at,
        libc::SYS_unshare,
        libc::SYS_setns,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_userfaultfd,
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_fanotify_init,
        libc::SYS_lookup_dcookie,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
        libc::SYS_reboot,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_acct,
        libc::SYS_quotactl,
        libc::SYS_quotactl_fd,
        libc::SYS_syslog,
        libc::SYS_vhangup,
        libc::SYS_settimeofday,
        libc::SYS_clock_settime,
        libc::SYS_clock_adjtime,
        libc::SYS_adjtimex,
    ];
    #[cfg(target_arch = "x86_64")]
    list.extend([
        libc::SYS_iopl,
        libc::SYS_ioperm,
        libc::SYS_modify_ldt,
        libc::SYS_uselib,
    ]);
    list
}

fn target_arch() -> Result<TargetArch, SandboxError> {
    TargetArch::try_from(std::env::consts::ARCH).map_err(seccomp_err)
}

/// Builds the filter and returns it as the raw bytes bubblewrap's `--seccomp` expects (an array
/// of `struct sock_filter` in native byte order).
pub(crate) fn build_program() -> Result<Vec<u8>, SandboxError> {
    let arch = target_arch()?;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for nr in denied_syscalls() {
        rules.insert(nr, Vec::new());
    }
    let masked = |arg: u8, mask: u64| {
        SeccompCondition::new(
            arg,
            SeccompCmpArgLen::Dword,
            SeccompCmpOp::MaskedEq(mask),
            mask,
        )
        .and_then(|c| SeccompRule::new(vec![c]))
        .map_err(seccomp_err)
    };
    let equals = |arg: u8, value: u64| {
        SeccompCondition::new(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value)
            .and_then(|c| SeccompRule::new(vec![c]))
            .map_err(seccomp_err)
    };
    // clone(flags, …): flags is argument 0 on every supported architecture.
    rules.insert(
        libc::SYS_clone,
        vec![masked(0, libc::CLONE_NEWUSER as u64)?],
    );
    rules.insert(
        libc::SYS_ioctl,
        vec![equals(1, TIOCSTI)?, equals(1, TIOCLINUX)?],
    );
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(seccomp_err)?;
    let mut program: BpfProgram = filter.try_into().map_err(seccomp_err)?;
    splice_prefix(&mut program)?;
    Ok(to_bytes(&program))
}

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// Inserts, right after seccompiler's architecture check, the instructions it cannot express:
/// `clone3` → `ENOSYS`, and on x86-64 the x32 syscall range → `EPERM`.
fn splice_prefix(program: &mut BpfProgram) -> Result<(), SandboxError> {
    // seccompiler starts with: load arch; jeq AUDIT_ARCH, skip 1; ret KILL_PROCESS.
    let arch_check_ok = program.len() > 3
        && program[0].code == BPF_LD_W_ABS
        && program[0].k == SECCOMP_DATA_ARCH
        && program[1].code == BPF_JMP_JEQ_K
        && program[2].code == BPF_RET_K
        && program[2].k == libc::SECCOMP_RET_KILL_PROCESS;
    if !arch_check_ok {
        return Err(seccomp_err(
            "seccompiler's program does not start with the expected architecture check",
        ));
    }
    let mut prefix = vec![stmt(BPF_LD_W_ABS, SECCOMP_DATA_NR)];
    #[cfg(target_arch = "x86_64")]
    prefix.extend([
        jump(BPF_JMP_JGE_K, 0x4000_0000, 0, 1),
        stmt(BPF_RET_K, errno(libc::EPERM)),
    ]);
    prefix.extend([
        jump(BPF_JMP_JEQ_K, libc::SYS_clone3 as u32, 0, 1),
        stmt(BPF_RET_K, errno(libc::ENOSYS)),
    ]);
    // Every jump in the prefix is local to it, and seccompiler's own program reloads the
    // syscall number before its first comparison, so nothing else needs adjusting.
    program.splice(3..3, prefix);
    if program.len() > 4096 {
        return Err(seccomp_err("the seccomp program is too long"));
    }
    Ok(())
}

fn to_bytes(program: &[sock_filter]) -> Vec<u8> {
    let mut out = Vec::with_capacity(program.len() * 8);
    for insn in program {
        out.extend_from_slice(&insn.code.to_ne_bytes());
        out.push(insn.jt);
        out.push(insn.jf);
        out.extend_from_slice(&insn.k.to_ne_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_a_program_with_the_prefix() {
        let bytes = build_program().unwrap();
        assert_eq!(bytes.len() % 8, 0);
        // Instruction 3 reloads the syscall number (our prefix).
        let insn3 = &bytes[24..32];
        assert_eq!(u16::from_ne_bytes([insn3[0], insn3[1]]), BPF_LD_W_ABS);
        assert!(bytes.len() / 8 > denied_syscalls().len());
    }
}
