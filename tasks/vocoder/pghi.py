"""Phase from magnitude: real-time Phase Gradient Heap Integration (RTPGHI; Průša & Holighaus
2017, "Phase vocoder done right", Alg. 1; the gradients of Průša, Balazs & Søndergaard 2017,
"A noniterative method for reconstruction of phase from STFT magnitude", eqs. 30-31).

Why the vocoder needs it: measured on the demo corpus's 15 flute test clips (musicnn FAD against
the real train clips), the shipped vocoder's *magnitude* with the true phase scores 2.57 where the
real clips score 2.47, but with its own predicted phase 4.06; Griffin-Lim iterations started
from that phase bring it to 3.4-3.6 at best. Its magnitude with the phase integrated here: 2.83.

For a Gaussian window, the STFT phase gradient is a function of the log-magnitude gradient
(eqs. 30-31): along time φ_t = (aM/γ)·∂_f log s + 2π·a·m/M (per hop, in radians), along
frequency φ_f = -(γ/(aM))·∂_t log s (per bin). γ = 0.25645·L² fits a Hann window of length L.
RTPGHI integrates these frame by frame, visiting the bins loudest first (a max-heap), so each
phase is carried from the neighbour whose estimate is most reliable. Bins more than `tolerance`
below the frame's peak get a fixed pseudo-random phase: integrating noise there adds nothing.
"""
from __future__ import annotations

import numba
import numpy as np

HANN_GAMMA = 0.25645   # γ / L² for a Hann window (Průša et al. 2017, Table I)
LOG_RANGE = 11.0       # log-magnitudes clamped this far below the peak before differentiating
                       # (ltfat's pghi does the same: an exact zero would make the gradient infinite)


# Serial numba throughout (no parallel=True): decoding runs inside Ray actors and worker threads,
# and numba's default threading layer aborts on parallel kernels launched from two threads at once.
BUCKETS = 2048        # the heap's priorities are log-magnitudes quantised to LOG_RANGE / BUCKETS
                      # (0.005 nats, 0.05 dB): a bucket queue pops in O(1) where a binary heap
                      # costs log2(2 * bins) swaps; measured 3-4x faster for the same phase


@numba.njit(cache=True)
def _noise_phase(n, m):
    """A fixed pseudo-random phase in [-π, π) for bin m of frame n (a multiplicative hash: no
    generator state, so a bin's phase never depends on which bins were integrated)."""
    h = (np.uint64(n) * np.uint64(0x9E3779B97F4A7C15)) ^ (np.uint64(m) * np.uint64(0xC2B2AE3D27D4EB4F))
    h ^= h >> np.uint64(29)
    h *= np.uint64(0xBF58476D1CE4E5B9)
    h ^= h >> np.uint64(32)
    return (h >> np.uint64(11)) * (2.0 * np.pi / 2.0 ** 53) - np.pi


@numba.njit(cache=True)
def _rtpghi(logs, dt, df, log_tol, floor):
    """logs, dt, df: [frames, bins] float64 (a frame contiguous) -> phase [frames, bins]
    (Alg. 1, frame by frame). The max-heap is a bucket queue over quantised log-magnitudes;
    within a bucket, last in first out."""
    nf, nb = logs.shape
    phase = np.empty((nf, nb))
    scale = (BUCKETS - 1) / LOG_RANGE
    head = np.full(BUCKETS, -1, np.int64)
    nxt = np.empty(2 * nb, np.int64)
    val = np.empty(2 * nb, np.int64)    # m: bin m of the previous frame; nb + m: of this frame
    todo = np.zeros(nb, np.bool_)
    for n in range(nf):
        # bins at the clamp floor carry no gradient: never integrated, like the quiet ones
        threshold = max(logs[n].max() + log_tol, floor + 1e-9)
        nodes, size, top, left = 0, 0, -1, 0
        for m in range(nb):
            todo[m] = logs[n, m] > threshold
            if not todo[m]:
                phase[n, m] = _noise_phase(n, m)
            else:
                left += 1
                # the first frame has no past: its bins start from phase 0, as if a frame of
                # the same spectrum preceded it
                b = int(((logs[n - 1, m] if n > 0 else logs[n, m]) - floor) * scale)
                val[nodes], nxt[nodes], head[b] = m, head[b], nodes
                nodes, size, top = nodes + 1, size + 1, max(top, b)
        while size > 0:
            while head[top] < 0:
                top -= 1
            node = head[top]
            head[top] = nxt[node]
            size -= 1
            if left == 0:
                continue    # drain what is left, so every bucket starts the next frame empty
            k = val[node]
            if k < nb:      # from the previous frame: integrate along time (trapezoid)
                if todo[k]:
                    past = phase[n - 1, k] if n > 0 else 0.0
                    past_dt = dt[n - 1, k] if n > 0 else dt[n, k]
                    phase[n, k] = past + 0.5 * (past_dt + dt[n, k])
                    todo[k] = False
                    left -= 1
                    b = int((logs[n, k] - floor) * scale)
                    val[nodes], nxt[nodes], head[b] = nb + k, head[b], nodes
                    nodes, size, top = nodes + 1, size + 1, max(top, b)
            else:           # from this frame: integrate along frequency to both neighbours
                m = k - nb
                for j in (m - 1, m + 1):
                    if 0 <= j < nb and todo[j]:
                        phase[n, j] = phase[n, m] + 0.5 * (df[n, m] + df[n, j]) * (j - m)
                        todo[j] = False
                        left -= 1
                        b = int((logs[n, j] - floor) * scale)
                        val[nodes], nxt[nodes], head[b] = nb + j, head[b], nodes
                        nodes, size, top = nodes + 1, size + 1, max(top, b)
    return phase


@numba.njit(cache=True)
def _log_magnitude(mag):
    """[frames, bins] magnitude -> (log-magnitude clamped LOG_RANGE below its peak, that floor)."""
    nf, nb = mag.shape
    logs = np.empty((nf, nb))
    for n in range(nf):
        for m in range(nb):
            logs[n, m] = np.log(max(mag[n, m], 1e-30))
    floor = logs.max() - LOG_RANGE
    for n in range(nf):
        for m in range(nb):
            logs[n, m] = max(logs[n, m], floor)
    return logs, floor


@numba.njit(cache=True)
def _gradients(logs, hop, n_fft):
    """Eqs. 30-31: the phase's increment per hop along time (dt) and per bin along frequency
    (df), from central differences of the log-magnitude (one-sided at the edges)."""
    nf, nb = logs.shape
    gamma = HANN_GAMMA * n_fft * n_fft
    k_time, k_freq = hop * n_fft / gamma, gamma / (hop * n_fft)
    dt, df = np.empty((nf, nb)), np.empty((nf, nb))
    for n in range(nf):
        n0, n1 = max(n - 1, 0), min(n + 1, nf - 1)
        for m in range(nb):
            m0, m1 = max(m - 1, 0), min(m + 1, nb - 1)
            dt[n, m] = (logs[n, m1] - logs[n, m0]) / max(m1 - m0, 1) * k_time + 2 * np.pi * hop * m / n_fft
            df[n, m] = -(logs[n1, m] - logs[n0, m]) / max(n1 - n0, 1) * k_freq
    return dt, df


@numba.njit(cache=True)
def _to_torch_convention(phase):
    """PGHI's gradients hold for a phase referenced to the window's centre; torch.stft references
    it to the frame's first sample, n_fft / 2 earlier: a factor exp(iπm) per bin m. Wrapped to
    [-π, π), so float32 keeps its precision (the integrated phase grows ~2π·hop·m/n_fft a frame)."""
    nf, nb = phase.shape
    out = np.empty((nf, nb), np.float32)
    for n in range(nf):
        for m in range(nb):
            out[n, m] = np.remainder(phase[n, m] + np.pi * m + np.pi, 2 * np.pi) - np.pi
    return out


def pghi_phase(magnitude: np.ndarray, hop: int, n_fft: int, tolerance: float = 1e-3) -> np.ndarray:
    """STFT magnitude [n_fft // 2 + 1, frames] (Hann window of n_fft, hop `hop`) -> phase in
    torch.stft's convention (each frame's phase referenced to its first sample), in [-π, π).
    Deterministic: the bins below `tolerance` × their frame's peak get a fixed pseudo-random phase."""
    mag = np.asarray(magnitude)
    if mag.ndim != 2 or mag.shape[0] != n_fft // 2 + 1:
        raise ValueError(f"expected a magnitude of shape [{n_fft // 2 + 1}, frames], got {mag.shape}")
    if not 0 < tolerance < 1:
        raise ValueError(f"tolerance={tolerance}: expected a fraction of the frame's peak in (0, 1)")
    logs, floor = _log_magnitude(np.ascontiguousarray(np.asarray(mag, np.float32).T))
    dt, df = _gradients(logs, hop, n_fft)
    return _to_torch_convention(_rtpghi(logs, dt, df, float(np.log(tolerance)), floor)).T
