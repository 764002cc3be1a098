# -*- Python -*-
import os
import shutil
import subprocess

import lit.formats
from lit.llvm import llvm_config
from lit.llvm.subst import ToolSubst

config.name = "MOE"
config.test_format = lit.formats.ShTest(not llvm_config.use_lit_shell)
config.suffixes = [".mlir", ".test"]
config.excludes = ["Inputs", "CMakeLists.txt", "lit.cfg.py", "lit.site.cfg.py"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.moe_obj_root, "test")

config.substitutions.append(("%models", os.path.join(config.moe_src_root, "models")))
config.substitutions.append(("%srcroot", config.moe_src_root))
config.substitutions.append(("%python", config.python_with_torch))

llvm_config.use_default_substitutions()
llvm_config.with_environment("PATH", config.llvm_tools_dir, append_path=True)

# Under AddressSanitizer, resident memory is not what the program allocates
# (shadow memory, redzones, quarantine): memory measurements are unsupported.
if "Address" in config.moe_sanitizer:
    config.available_features.add("asan")

tools = [ToolSubst("moe-opt", unresolved="fatal"), ToolSubst("moec", unresolved="fatal"),
         ToolSubst("moe-import", unresolved="fatal"),
         ToolSubst("moe-calibrate", unresolved="fatal")]
llvm_config.add_tool_substitutions(tools, [config.moe_tools_dir, config.llvm_tools_dir])

# MPI launcher for the tests that run executables as MPI processes: feature
# `mpi`, substitution %mpirun (Open MPI also needs root and oversubscription
# allowed: CI runs as root on 2 cores).
mpirun = shutil.which("mpirun")
if mpirun:
    try:
        version = subprocess.run([mpirun, "--version"], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, universal_newlines=True,
                                 timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired):
        version = None
    if version is not None:
        flags = " --allow-run-as-root --oversubscribe" if "Open MPI" in version or "OpenRTE" in version else ""
        launcher = mpirun + flags
        # Under AddressSanitizer, Open MPI's own start-up allocations are not
        # the executable's leaks: its ranks run without leak detection (as
        # the Python checkers' MPI runs do); everything else stays checked.
        if "Address" in config.moe_sanitizer:
            asan = os.environ.get("ASAN_OPTIONS", "")
            launcher = "env ASAN_OPTIONS=" + (asan + ":" if asan else "") + \
                "detect_leaks=0 " + launcher
        config.available_features.add("mpi")
        config.substitutions.append(("%mpirun", launcher))

# The CUDA backend: feature `cuda` when moec can link it (moec --cuda), and
# `gpu` when this machine also has a GPU with a driver. The GPU tests are
# unsupported without one; the note says so in the run's output.
if config.moe_have_cuda:
    config.available_features.add("cuda")
    smi = shutil.which("nvidia-smi")
    has_gpu = False
    if smi:
        try:
            has_gpu = subprocess.run([smi, "-L"], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, universal_newlines=True,
                                     timeout=60).stdout.strip().startswith("GPU")
        except (OSError, subprocess.TimeoutExpired):
            has_gpu = False
    if has_gpu:
        config.available_features.add("gpu")
    else:
        lit_config.note("CUDA backend tests (REQUIRES: gpu): skipped: no GPU")
