"""Sound synthesis for SynthAVS: one sound per identity, mixtures, and domain background noise.

A sound is a harmonic (or narrow-band noisy) tone whose pitch follows a contour and whose loudness
follows a rhythm envelope. Per-clip randomness (pitch jitter, phases, rhythm offsets) comes from the
caller's numpy Generator, so the same generator state gives the same waveform.
"""

from __future__ import annotations

import numpy as np

from clavs.data.synth.identities import SoundIdentity

SAMPLE_RATE = 16000
MAX_PARTIAL_HZ = 7400.0  # partials above the top VGGish mel edge are dropped (and would alias near 8 kHz)

_HARMONIC_AMPS: dict[str, np.ndarray] = {
    "pure": np.array([1.0, 0.08]),
    "odd": np.array([1.0 / k if k % 2 else 0.0 for k in range(1, 10)]),
    "saw": 1.0 / np.arange(1, 13),
    "bright": np.exp(-(((np.arange(1, 13) - 6.0) / 2.5) ** 2)) + 0.3 / np.arange(1, 13),
    "noisy": np.array([1.0, 0.6, 0.45, 0.3]),  # narrow-band noise around these harmonics
    "dual": np.array([1.0, 0.1]),               # plus a second tone a fifth above (below)
}


def _lowpass_noise(rng: np.random.Generator, n: int, cutoff_hz: float, sr: int) -> np.ndarray:
    """White noise low-passed by zeroing FFT bins above cutoff, scaled to unit RMS."""
    spec = np.fft.rfft(rng.standard_normal(n))
    spec[np.fft.rfftfreq(n, 1.0 / sr) > cutoff_hz] = 0.0
    out = np.fft.irfft(spec, n)
    return out / (np.sqrt(np.mean(out**2)) + 1e-12)


def colored_noise(rng: np.random.Generator, n: int, color: str) -> np.ndarray:
    """Unit-RMS noise whose power falls as 1/f^beta: white (0), pink (1) or brown (2)."""
    beta = {"white": 0.0, "pink": 1.0, "brown": 2.0}
    if color not in beta:
        raise ValueError(f"unknown noise colour {color!r}; expected one of {sorted(beta)}")
    spec = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n)
    freqs[0] = freqs[1]
    spec *= freqs ** (-beta[color] / 2.0)
    out = np.fft.irfft(spec, n)
    out -= out.mean()
    return out / (np.sqrt(np.mean(out**2)) + 1e-12)


def _pitch_track(contour: str, t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Multiplicative pitch factor over time for a contour."""
    phase = rng.uniform(0.0, 2.0 * np.pi)
    if contour == "flat":
        return np.ones_like(t)
    if contour == "vibrato":
        return 1.0 + 0.035 * np.sin(2.0 * np.pi * rng.uniform(5.0, 6.5) * t + phase)
    if contour == "siren":  # slow sweep of +-half an octave
        return 2.0 ** (0.5 * np.sin(2.0 * np.pi * rng.uniform(0.3, 0.45) * t + phase))
    period = rng.uniform(1.1, 1.5)
    ramp = ((t + rng.uniform(0.0, period)) % period) / period
    if contour == "glide_up":
        return 2.0 ** (0.7 * ramp - 0.35)
    if contour == "glide_down":
        return 2.0 ** (0.35 - 0.7 * ramp)
    if contour == "trill":  # alternate between two notes a minor third apart
        square = (np.sin(2.0 * np.pi * 4.0 * t + phase) > 0).astype(np.float64)
        return 2.0 ** (3.0 / 12.0 * square)
    raise ValueError(f"unknown pitch contour {contour!r}")


def _smooth_pulses(t: np.ndarray, rate: float, duty: float, offset: float, floor: float) -> np.ndarray:
    """A pulse train with raised-cosine edges (no clicks) of the given rate (Hz) and duty cycle."""
    pos = ((t + offset) * rate) % 1.0
    edge = 0.15 * duty
    env = np.clip(np.minimum(pos / edge, (duty - pos) / edge), 0.0, 1.0)
    env = 0.5 - 0.5 * np.cos(np.pi * env)
    return floor + (1.0 - floor) * env


def _envelope(rhythm: str, t: np.ndarray, rng: np.random.Generator, sr: int) -> np.ndarray:
    """Amplitude envelope over time for a rhythm."""
    offset = rng.uniform(0.0, 1.0)
    if rhythm == "steady":
        return 0.9 + 0.1 * np.sin(2.0 * np.pi * 0.3 * t + 6.0 * offset)
    if rhythm == "pulse2":
        return _smooth_pulses(t, 2.0, 0.5, offset, 0.03)
    if rhythm == "pulse5":
        return _smooth_pulses(t, 5.0, 0.45, offset, 0.03)
    if rhythm == "tremolo":
        return 0.55 + 0.45 * np.sin(2.0 * np.pi * 11.0 * t + 6.0 * offset)
    if rhythm == "swell":
        return 0.08 + 0.92 * (0.5 - 0.5 * np.cos(2.0 * np.pi * 0.45 * t + 6.0 * offset))
    if rhythm == "triplet":  # three quick pulses, then a rest, once per second
        return _smooth_pulses(t, 6.0, 0.5, offset, 0.03) * (((t + offset) % 1.0) < 0.5)
    if rhythm == "gallop":  # pairs of pulses at 3 Hz
        return _smooth_pulses(t, 9.0, 0.45, offset, 0.03) * (((t + offset) * 3.0 % 1.0) < 0.6)
    if rhythm == "bursts":  # sparse random onsets with fast exponential decay
        n = t.shape[0]
        env = np.zeros(n)
        decay = np.exp(-np.arange(int(0.12 * sr)) / (0.045 * sr))
        for start in rng.integers(0, n, size=max(3, rng.poisson(3.5 * t[-1]))):
            seg = env[start:start + decay.shape[0]]
            seg += decay[:seg.shape[0]]
        return np.minimum(env, 1.0) * 0.97 + 0.03
    raise ValueError(f"unknown rhythm {rhythm!r}")


def synthesize_audio(sound: SoundIdentity, rng: np.random.Generator, duration: float = 5.0,
                     sr: int = SAMPLE_RATE) -> np.ndarray:
    """One clip of a sound identity: float64 waveform [duration*sr], unit RMS, no noise.

    Per-clip variation: pitch jitter of +-3 %, random partial phases, random rhythm/contour phases.
    """
    n = int(round(duration * sr))
    t = np.arange(n) / sr
    f0 = sound.f0_hz * rng.uniform(0.97, 1.03)
    freq = f0 * _pitch_track(sound.contour, t, rng)
    phase = 2.0 * np.pi * np.cumsum(freq) / sr
    wave = np.zeros(n)
    if sound.timbre == "bell":  # inharmonic partials
        partials = [(1.0, 1.0), (2.76, 0.6), (5.40, 0.4), (8.93, 0.25)]
    elif sound.timbre == "nasal":  # formant fixed near 1.2 kHz whatever the pitch
        partials = [(float(k), float(np.exp(-(((k * f0) - 1200.0) / 450.0) ** 2) + 0.08 / k)) for k in range(1, 16)]
    elif sound.timbre in _HARMONIC_AMPS:
        partials = [(float(k + 1), float(a)) for k, a in enumerate(_HARMONIC_AMPS[sound.timbre]) if a > 0]
    else:
        raise ValueError(f"unknown timbre {sound.timbre!r}")
    unit = np.exp(1j * phase)
    power, power_k = np.ones(n, dtype=np.complex128), 0
    for ratio, amp in partials:
        audible = freq * ratio < MAX_PARTIAL_HZ
        offset = rng.uniform(0.0, 2.0 * np.pi)
        if ratio.is_integer():  # exp(i k phase) by repeated products: much cheaper than cos per partial
            while power_k < ratio:
                power *= unit
                power_k += 1
            carrier = power.real * np.cos(offset) - power.imag * np.sin(offset)
        else:
            carrier = np.cos(ratio * phase + offset)
        if sound.timbre == "noisy":  # narrow-band noise centred on each harmonic
            carrier = carrier * _lowpass_noise(rng, n, 0.06 * f0 + 20.0, sr)
        wave += amp * carrier * audible
    if sound.timbre == "dual":
        wave += 0.8 * np.cos(1.5 * phase + rng.uniform(0.0, 2.0 * np.pi)) * (1.5 * freq < MAX_PARTIAL_HZ)
    wave *= _envelope(sound.rhythm, t, rng, sr)
    return wave / (np.sqrt(np.mean(wave**2)) + 1e-12)


def mix_sources(sources: list[np.ndarray], rng: np.random.Generator, snr_db: float, noise_color: str,
                peak: float) -> np.ndarray:
    """Sum unit-RMS sources with random gains, add coloured noise at `snr_db` relative to the mix,
    then scale the result to the given peak amplitude."""
    if not sources:
        raise ValueError("mix_sources needs at least one source")
    mix = sum(s * rng.uniform(0.7, 1.0) for s in sources)
    signal_rms = np.sqrt(np.mean(mix**2))
    noise = colored_noise(rng, mix.shape[0], noise_color) * signal_rms * 10.0 ** (-snr_db / 20.0)
    out = mix + noise
    return out * (peak / (np.max(np.abs(out)) + 1e-12))
