"""Batch samplers: determinism, resume, P x K structure, distributed shards."""

from __future__ import annotations

from collections import Counter

import pytest

from tbpr.data.samplers import IdentityBatchSampler, RandomBatchSampler

# 7 identities: sizes 5, 4, 1, 3, 6, 2, 2 (pid 2 has fewer than K=2 samples)
PIDS = [0] * 5 + [1] * 4 + [2] + [3] * 3 + [4] * 6 + [5] * 2 + [6] * 2
# groups of K=2: 2 + 2 + 1 + 1 + 3 + 1 + 1 = 11


def identity(**kw) -> IdentityBatchSampler:
    return IdentityBatchSampler(PIDS, **{"batch_size": 4, "num_instances": 2, "seed": 3, **kw})


@pytest.mark.parametrize("make", [lambda **kw: RandomBatchSampler(23, 4, seed=1, **kw), identity])
def test_deterministic_per_seed_and_epoch(make):
    a, b = make(), make()
    assert list(a) == list(b) and list(a) == list(a)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    a.set_epoch(0)
    assert list(a) == first


@pytest.mark.parametrize("make", [lambda **kw: RandomBatchSampler(23, 4, seed=1, **kw), identity])
def test_resume_skips_to_the_tail_of_the_epoch(make):
    sampler = make()
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.set_start_batch(3)
    assert list(sampler) == full[3:]
    assert list(sampler) == full  # the skip applies to one iteration only
    sampler.set_start_batch(2)
    sampler.set_epoch(2)  # a new epoch starts from its first batch
    assert list(sampler) == full


def test_random_batches_cover_a_permutation():
    sampler = RandomBatchSampler(23, 4, seed=1)
    batches = list(sampler)
    assert len(sampler) == len(batches) == 5 and all(len(b) == 4 for b in batches)
    flat = [i for b in batches for i in b]
    assert len(set(flat)) == 20 and set(flat) <= set(range(23))
    keep_last = RandomBatchSampler(23, 4, seed=1, drop_last=False)
    batches = list(keep_last)
    assert len(keep_last) == 6 and len(batches[-1]) == 3
    assert sorted(i for b in batches for i in b) == list(range(23))


def test_identity_batches_are_p_ids_times_k():
    sampler = IdentityBatchSampler(PIDS, batch_size=6, num_instances=2, seed=0)
    for epoch in range(20):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(sampler) == len(batches) == 11 // 3
        for batch in batches:
            pids = [PIDS[i] for i in batch]
            assert len(batch) == 6
            assert [pids[j] for j in range(0, 6, 2)] == [pids[j] for j in range(1, 6, 2)]  # K consecutive


def test_identity_epoch_uses_every_group_once():
    sampler = IdentityBatchSampler(PIDS, batch_size=2, num_instances=2, seed=0)  # P=1: no group dropped
    for epoch in range(10):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler) == 11
        counts = Counter(PIDS[i] for b in batches for i in b)
        assert counts == {0: 4, 1: 4, 2: 2, 3: 2, 4: 6, 5: 2, 6: 2}  # (n // K) * K or K
        used = [i for b in batches for i in b if PIDS[i] != 2]
        assert len(used) == len(set(used))  # without replacement inside an identity
        assert [i for b in batches for i in b if PIDS[i] == 2] == [9, 9]


def test_identity_draws_spread_a_large_identity_over_the_epoch():
    pids = [0] * 40 + [p for p in range(1, 21) for _ in range(2)]  # id 0: 20 groups, ids 1..20: one each
    for seed in range(20):
        batches = list(IdentityBatchSampler(pids, batch_size=4, num_instances=2, seed=seed))
        assert len(batches) == 20
        repeated = sum(len({pids[i] for i in b}) < 2 for b in batches)
        assert repeated <= 5  # uniform draws (torchreid) leave id 0 alone at the end: 7+ such batches


def test_identity_last_batch_repeats_ids_when_too_few_are_left():
    pids = [0] * 8 + [1] * 2  # groups of K=2: 4 + 1, P=2 -> 2 batches
    for seed in range(5):
        batches = list(IdentityBatchSampler(pids, batch_size=4, num_instances=2, seed=seed))
        assert [sorted(pids[i] for i in b) for b in batches] == [[0, 0, 1, 1], [0, 0, 0, 0]]
        assert len({i for b in batches for i in b}) == 8


@pytest.mark.parametrize("world_size", [2, 4])
@pytest.mark.parametrize("kind", ["random", "identity"])
def test_distributed_shards_make_up_the_global_batch(kind, world_size):
    def make(**kw):
        if kind == "random":
            return RandomBatchSampler(50, 8, seed=7, **kw)
        return IdentityBatchSampler(PIDS * 3, 8, num_instances=2, seed=7, **kw)

    single = make()
    ranks = [make(rank=r, world_size=world_size) for r in range(world_size)]
    for epoch in (0, 3):
        for s in [single, *ranks]:
            s.set_epoch(epoch)
        shards = [list(s) for s in ranks]
        assert all(len(s) == len(single) for s in ranks)
        for b, batch in enumerate(single):
            parts = [shard[b] for shard in shards]
            assert all(len(p) == 8 // world_size for p in parts)
            assert [i for p in parts for i in p] == batch


def test_identity_shards_keep_whole_identities():
    ranks = [IdentityBatchSampler(PIDS * 3, 8, num_instances=2, seed=1, rank=r, world_size=2) for r in (0, 1)]
    pids = PIDS * 3
    for batch in ranks[0]:
        assert pids[batch[0]] == pids[batch[1]] and pids[batch[2]] == pids[batch[3]]


def test_distributed_resume_matches():
    full = list(RandomBatchSampler(50, 8, seed=7, rank=1, world_size=2))
    resumed = RandomBatchSampler(50, 8, seed=7, rank=1, world_size=2)
    resumed.set_start_batch(4)
    assert list(resumed) == full[4:]


def test_invalid_arguments():
    with pytest.raises(ValueError, match="multiple of world_size"):
        RandomBatchSampler(10, 5, world_size=2)
    with pytest.raises(ValueError, match="rank=2"):
        RandomBatchSampler(10, 4, rank=2, world_size=2)
    with pytest.raises(ValueError, match="drop_last"):
        RandomBatchSampler(10, 4, world_size=2, drop_last=False)
    with pytest.raises(ValueError, match="num_instances"):
        IdentityBatchSampler(PIDS, 6, num_instances=4)
