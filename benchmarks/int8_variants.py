"""int8 ONNX variants: size, batch-1 one-thread latency (interleaved medians), parity vs PyTorch.

    INT8_WORK=/tmp/int8 REPS=60 python benchmarks/int8_variants.py [variant ...]

Quantizes the shipped fp32 ONNX export in several ways (onnxruntime.quantization), caches the files and crops in
$INT8_WORK, times every session in turn at batch 1 on one thread, and prints one row per variant (the table in
export/README.md). Needs the [export] extra and the data pack (calibration: training splits; parity: held-out).
"""
import json, time, sys, os, tempfile
from pathlib import Path
import numpy as np, onnx, onnxruntime as ort
ort.set_default_logger_severity(3)
from onnxruntime.quantization import (quantize_dynamic, quantize_static, QuantFormat, QuantType, CalibrationMethod)
from onnxruntime.quantization.shape_inference import quant_pre_process
from faceanalysis.weights import load_model
from faceanalysis.export.calibration import training_crops, parity_crops
from faceanalysis.export.onnx_export import _Reader, FLOAT_NODES
from faceanalysis.export import parity
from faceanalysis.preprocess import normalise_array
import torch; torch.set_num_threads(1)
OUT = Path(os.environ.get('INT8_WORK', tempfile.gettempdir() + '/faceanalysis_int8')); OUT.mkdir(exist_ok=True)
SRC = Path(__file__).resolve().parents[1] / 'faceanalysis' / 'assets' / 'faceanalysis_s128.fp32.onnx'
model, cfg = load_model(None)
pre = cfg.preprocess
if not (OUT/'calib.npy').exists():
    np.save(OUT/'calib.npy', normalise_array(training_crops(pre, 300), pre))
    np.save(OUT/'check.npy', normalise_array(parity_crops(pre, 64), pre))
calib, check = np.load(OUT/'calib.npy'), np.load(OUT/'check.npy')
PRE = OUT/'pre.onnx'
if not PRE.exists(): quant_pre_process(str(SRC), str(PRE), skip_symbolic_shape=True)
m = onnx.load(str(SRC)); heads = [n.name for n in m.graph.node if any(f in n.name for f in FLOAT_NODES)]
V = {}
def dyn(name, ops, per_channel, reduce_range, wt=QuantType.QInt8, excl=True, extra=None):
    p = OUT/f'{name}.onnx'
    if not p.exists():
        quantize_dynamic(str(PRE), str(p), op_types_to_quantize=ops, per_channel=per_channel, reduce_range=reduce_range,
                         weight_type=wt, nodes_to_exclude=heads if excl else None, extra_options=extra or {"MatMulConstBOnly": True})
    V[name] = p
def stat(name, fmt, act, wt, ops, reduce_range=False, per_channel=True, extra=None):
    p = OUT/f'{name}.onnx'
    if not p.exists():
        ex = {"ActivationSymmetric": False, "WeightSymmetric": True}; ex.update(extra or {})
        quantize_static(str(PRE), str(p), _Reader(calib), quant_format=fmt, per_channel=per_channel, reduce_range=reduce_range,
                        activation_type=act, weight_type=wt, op_types_to_quantize=ops, nodes_to_exclude=heads,
                        calibrate_method=CalibrationMethod.MinMax, extra_options=ex)
    V[name] = p
V['fp32'] = SRC
stat('static_qdq_s8s8_mmgc', QuantFormat.QDQ, QuantType.QInt8, QuantType.QInt8, ["MatMul","Gemm","Conv"])  # current default
stat('static_qdq_u8s8_mmgc', QuantFormat.QDQ, QuantType.QUInt8, QuantType.QInt8, ["MatMul","Gemm","Conv"], reduce_range=True)
stat('static_qop_u8s8_mmgc', QuantFormat.QOperator, QuantType.QUInt8, QuantType.QInt8, ["MatMul","Gemm","Conv"], reduce_range=True)
stat('static_qop_u8s8_mm_constB', QuantFormat.QOperator, QuantType.QUInt8, QuantType.QInt8, ["MatMul","Gemm"], reduce_range=True, extra={"MatMulConstBOnly": True})
dyn('dyn_mmg_pc_rr', ["MatMul","Gemm"], True, True)
dyn('dyn_mmg_rr', ["MatMul","Gemm"], False, True)
dyn('dyn_mmg_pc', ["MatMul","Gemm"], True, False)
dyn('dyn_mm_pc_rr', ["MatMul"], True, True)
dyn('dyn_mmgc_pc_rr', ["MatMul","Gemm","Conv"], True, True)
dyn('dyn_mmg_rr_u8w', ["MatMul","Gemm"], False, True, wt=QuantType.QUInt8)
dyn('dyn_mmg_rr_attn', ["MatMul","Gemm"], False, True, extra={"MatMulConstBOnly": False})  # attention matmuls too
sel = sys.argv[1:] or list(V)
ref = parity.torch_reference(model, check)
levels = {'all': ort.GraphOptimizationLevel.ORT_ENABLE_ALL, 'ext': ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
          'basic': ort.GraphOptimizationLevel.ORT_ENABLE_BASIC}
sess = {}
for name in sel:
    for lv in (['all', 'ext', 'basic'] if name in ('fp32', 'dyn_mmg_pc_rr', 'static_qdq_s8s8_mmgc', 'static_qop_u8s8_mmgc') else ['all']):
        so = ort.SessionOptions(); so.intra_op_num_threads = 1; so.inter_op_num_threads = 1
        so.graph_optimization_level = levels[lv]
        sess[(name, lv)] = ort.InferenceSession(str(V[name]), so, providers=['CPUExecutionProvider'])
res = {}
for (name, lv), s in sess.items():
    names = [o.name for o in s.get_outputs()]
    out = parity.run_batched(lambda b: dict(zip(names, s.run(None, {'input': b}))), check, 16)
    mt = parity.compare(ref, out)
    res[(name, lv)] = {'size_mb': V[name].stat().st_size / 1e6, 'metrics': mt, 'fail': parity.failures(mt, 'int8'), 't': []}
x1 = check[:1]
for s in sess.values(): s.run(None, {'input': x1})
for rep in range(int(os.environ.get('REPS', 60))):
    for k, s in sess.items():
        xi = check[rep % len(check)][None]
        t = time.perf_counter(); s.run(None, {'input': xi}); res[k]['t'].append(time.perf_counter() - t)
fp = np.median(res[('fp32', 'all')]['t'])
rows = []
for (name, lv), r in res.items():
    med = np.median(r['t']); mt = r['metrics']
    rows.append((name, lv, round(r['size_mb'], 2), round(med*1e3, 2), round(fp/med, 2), round(mt['embedding_cosine_mean'], 4),
                 round(mt['landmarks_mean_px'], 3), round(mt['parsing_agreement']*100, 1), round(mt['expression_top1_agreement']*100, 1), 'pass' if not r['fail'] else 'FAIL'))
for r in rows: print(' | '.join(map(str, r)))
json.dump(rows, open(OUT/'results.json', 'w'))
