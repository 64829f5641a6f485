"""Streaming clip assembly (KeyframeClipSampler) against the dataset's frame indexing and random-access reads."""

import math

import numpy as np
import pytest

from evad_d2.data.video import (
    KeyframeClipSampler,
    VideoFrame,
    clip_frame_indices,
    iter_video_frames,
    keyframe_frame_index,
    read_video_frames,
)


def _stream(sampler, frames):
    out = []
    for f in frames:
        out += sampler.push(f)
    return out + sampler.finish()


def _frames(times):
    return [VideoFrame(i, t, np.zeros((1, 1, 3), np.uint8)) for i, t in enumerate(times)]


@pytest.mark.parametrize("fps, model_fps", [(30, 30), (60, 30), (25, 30)])
def test_sampler_constant_rate_equals_the_dataset_frame_indexing(fps, model_fps):
    """At equal rates the clips are the mapper's clip_frame_indices (edge frames repeated)."""
    n, T, tau, ki = 97, 8, 2, 4
    frames = _frames([i / fps for i in range(n)])
    sampler = KeyframeClipSampler(T, ki, tau / model_fps, 1.0, tolerance=0.5 / fps)
    clips = _stream(sampler, frames)
    assert [k.index for k, _ in clips] == [round(s * fps) for s in range(math.ceil(n / fps))]
    for key, got in clips:
        if fps == model_fps:
            expected = clip_frame_indices(key.index, T, tau, ki, n)
        else:  # brute force: the frame nearest each sample time, clamped to the video
            expected = [
                min(range(n), key=lambda j: (abs(j / fps - (key.time + (i - ki) * tau / model_fps)), j))
                for i in range(T)
            ]
        assert [f.index for f in got] == expected
    assert sampler.max_buffered <= (T - 1) * tau * fps / model_fps + 2


def test_sampler_variable_rate_brute_force():
    rng = np.random.default_rng(1)
    times = np.cumsum(rng.uniform(0.005, 0.2, 300))
    times -= times[0]
    frames = _frames(times.tolist())
    T, ki, step, interval, tol = 6, 3, 0.1, 0.7, 0.01
    clips = _stream(KeyframeClipSampler(T, ki, step, interval, tolerance=tol), frames)
    # Reference: keyframe k is the first frame at or after k * interval - tol (each frame once).
    keys, k = [], 0
    for f in frames:
        if f.time >= k * interval - tol:
            keys.append(f.index)
            while k * interval - tol <= f.time:
                k += 1
    assert [key.index for key, _ in clips] == keys
    for key, got in clips:
        for i, f in enumerate(got):
            s = key.time + (i - ki) * step
            best = min(frames, key=lambda g: (abs(g.time - s), g.time))
            assert f.index == best.index


def test_sampler_memory_does_not_grow_with_length():
    def peak(n):
        s = KeyframeClipSampler(8, 4, 2 / 30, 1.0, tolerance=0.5 / 30)
        _stream(s, _frames([i / 30 for i in range(n)]))
        return s.max_buffered

    assert peak(300) == peak(3000) <= 7 * 2 + 2


def test_streamed_clips_equal_random_access_reads(generated):
    """Decoding as a stream gives exactly the frames the dataset reader picks for a keyframe."""
    _, video = generated
    sampler = KeyframeClipSampler(8, 4, 2 / 30, 1.0, tolerance=0.5 / 30)
    clips = _stream(sampler, iter_video_frames(str(video)))
    assert [k.index for k, _ in clips] == [0, 30, 60, 90, 120]
    for key, frames in clips[1:3]:
        ref = read_video_frames(str(video), clip_frame_indices(key.index, 8, 2, 4, 150))
        np.testing.assert_array_equal(np.stack([f.image for f in frames]), ref)


def pyslowfast_sequence(center_idx, half_len, sample_rate, num_frames):
    """PySlowFast's get_sequence, the reference for AVA clip sampling."""
    seq = list(range(center_idx - half_len, center_idx + half_len, sample_rate))
    return [min(max(s, 0), num_frames - 1) for s in seq]


def test_keyframe_and_clip_indices_follow_the_standard_mapping():
    assert keyframe_frame_index(902) == 60 and keyframe_frame_index(1798) == 26940
    assert keyframe_frame_index(3, start_sec=0) == 90
    for T_, tau in ((16, 4), (8, 8), (32, 2), (4, 1)):
        for center in (0, 10, 60, 100, 179):
            got = clip_frame_indices(center, T_, tau, T_ // 2, 180)
            assert got == pyslowfast_sequence(center, T_ * tau // 2, tau, 180)
            assert got[T_ // 2] == center
    # A non-middle keyframe position shifts the window.
    assert clip_frame_indices(10, 4, 2, 0, 100) == [10, 12, 14, 16]
    assert clip_frame_indices(98, 4, 2, 0, 100) == [98, 99, 99, 99]
