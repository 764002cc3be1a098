# -*- Python -*-
import os

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

tools = [ToolSubst("moe-opt", unresolved="fatal"), ToolSubst("moec", unresolved="fatal")]
llvm_config.add_tool_substitutions(tools, [config.moe_tools_dir, config.llvm_tools_dir])
