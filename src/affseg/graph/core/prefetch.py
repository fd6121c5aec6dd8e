"""A software prefetch for numba kernels whose time goes to cache misses on random accesses.

``prefetch(array, index)`` asks the CPU to bring ``array[index]`` (1D, C-contiguous) into the
cache and returns at once; it never faults and has no effect on results. Kernels issue it a few
iterations ahead of the access, so that several misses are in flight at a time instead of one.
"""
from __future__ import annotations

from llvmlite import binding, ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

# the intrinsic's name carries its pointer type: opaque pointers from LLVM 15 on
_PREFETCH = "llvm.prefetch.p0" if binding.llvm_version_info >= (15,) else "llvm.prefetch.p0i8"


@intrinsic
def prefetch(typingctx, array, index):
    if not isinstance(array, types.Array) or array.ndim != 1 or not isinstance(index, types.Integer):
        return None
    sig = types.void(array, index)

    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        arr = context.make_array(array_type)(context, builder, args[0])
        pointer = cgutils.get_item_pointer(context, builder, array_type, arr, [args[1]], wraparound=False)
        byte_pointer = ir.IntType(8).as_pointer()
        int32 = ir.IntType(32)
        fn_type = ir.FunctionType(ir.VoidType(), [byte_pointer, int32, int32, int32])
        fn = cgutils.get_or_insert_function(builder.module, fn_type, _PREFETCH)
        # read access, highest temporal locality, data cache
        builder.call(fn, [builder.bitcast(pointer, byte_pointer), int32(0), int32(3), int32(1)])
        return context.get_dummy_value()

    return sig, codegen
