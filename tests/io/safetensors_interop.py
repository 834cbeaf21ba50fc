#!/usr/bin/env python3
"""The official `safetensors` library's side of ember's interop tests (tests/io/test_safetensors_interop.cpp).

  safetensors_interop.py dump FILE OUT.json
      Parses FILE with the official library (safetensors.deserialize: its header checks, offsets and
      dtypes) and writes what it read: metadata, and per tensor dtype, shape and the raw bytes (hex).
      For every dtype numpy has, the numpy API (safe_open(..., "np")) must read the same bytes and
      shape: the header describes the data the way the library's users will see it.
  safetensors_interop.py write OUT.safetensors
      Writes a file with the official library: one tensor per dtype with values from the formulas
      below (the C++ test writes the same formulas), a 0-d tensor, an empty one, and metadata.

Exit status 0 on success; anything else is a failure the C++ test reports with this script's output.
"""
import json
import sys

import numpy as np
import safetensors
import safetensors.numpy

NUMPY_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
                "U8": np.uint8, "BOOL": np.bool_}


def dump(path, out):
    with open(path, "rb") as f:
        raw = f.read()
    entries = safetensors.deserialize(raw)
    with safetensors.safe_open(path, framework="np") as f:
        metadata = f.metadata() or {}
        keys = set(f.keys())
        tensors = {}
        for name, info in entries:
            data = bytes(info["data"])
            if info["dtype"] in NUMPY_DTYPES:
                arr = f.get_tensor(name)
                if arr.dtype != NUMPY_DTYPES[info["dtype"]] or list(arr.shape) != list(info["shape"]):
                    sys.exit(f"{name}: numpy reads {arr.dtype}{list(arr.shape)}, header says {info['dtype']}{info['shape']}")
                if np.ascontiguousarray(arr).tobytes() != data:
                    sys.exit(f"{name}: numpy's bytes differ from deserialize's")
            tensors[name] = {"dtype": info["dtype"], "shape": list(info["shape"]), "hex": data.hex()}
    if keys != set(tensors):
        sys.exit(f"safe_open lists {sorted(keys)}, deserialize {sorted(tensors)}")
    with open(out, "w") as f:
        json.dump({"metadata": metadata, "tensors": tensors}, f)


def float_values(n):
    return [(i % 17) * 0.25 - 2.0 for i in range(n)]


def write(path):
    n = 15  # every float tensor is [3, 5]
    arrays = {
        "f64": np.array(float_values(n), dtype=np.float64).reshape(3, 5),
        "f32": np.array(float_values(n), dtype=np.float32).reshape(3, 5),
        "f16": np.array(float_values(n), dtype=np.float16).reshape(3, 5),
        "i64": np.array([i * (1 << 40) - 7 for i in range(4)], dtype=np.int64),
        "i32": np.array([i * 100000 - 2**31 for i in range(6)], dtype=np.int32).reshape(2, 3),
        "u8": np.array([(i * 37) % 256 for i in range(10)], dtype=np.uint8),
        "bool": np.array([i % 3 == 0 for i in range(7)], dtype=np.bool_),
        "scalar": np.array(3.5, dtype=np.float32),
        "empty": np.zeros((0, 4), dtype=np.float32),
    }
    # numpy has no bfloat16: its bits are the top half of the f32's (exact for these values).
    bf16 = (np.array(float_values(n), dtype=np.float32).view(np.uint32) >> 16).astype("<u2")
    arrays = {name: a.astype(a.dtype.newbyteorder("<"), order="C") for name, a in arrays.items()}
    metadata = {"framework": "numpy", "written_by": f"safetensors {safetensors.__version__}"}
    if hasattr(safetensors, "TensorSpec"):  # safetensors >= 0.8: raw buffers described by TensorSpec
        specs = {name: safetensors.TensorSpec(dtype=a.dtype.name, shape=a.shape, data_ptr=a.ctypes.data,
                                              data_len=a.nbytes) for name, a in arrays.items()}
        specs["bf16"] = safetensors.TensorSpec(dtype="bfloat16", shape=[3, 5], data_ptr=bf16.ctypes.data,
                                               data_len=bf16.nbytes)
    else:  # older releases: a dict per tensor with the header's dtype name and the bytes
        header_dtype = {v: k for k, v in NUMPY_DTYPES.items()}
        specs = {name: {"dtype": header_dtype[a.dtype.type], "shape": list(a.shape), "data": a.tobytes()}
                 for name, a in arrays.items()}
        specs["bf16"] = {"dtype": "BF16", "shape": [3, 5], "data": bf16.tobytes()}
    safetensors.serialize_file(specs, path, metadata=metadata)
    # The buffers the specs point into stay alive until here.
    del specs, arrays, bf16


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "dump":
        dump(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 3 and sys.argv[1] == "write":
        write(sys.argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
