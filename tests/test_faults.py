"""Faults around publishing: an interrupted push leaves the previous release intact and can be retried."""
import pytest
import torch

from fakeface.model import create_detector, load_detector, push_detector, save_detector
from fakeface.preprocess import Preprocessing

PP = Preprocessing(input_size=(3, 32, 32), num_test_crops=1)


def _release(tmp_path, name, seed):
    torch.manual_seed(seed)
    model = create_detector("mobilenetv2_050", preprocessing=PP).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model, save_detector(model, tmp_path / name)


@pytest.mark.parametrize("target", [r"/commit/", r"^/__fake_lfs__/"])
def test_interrupted_push_keeps_the_previous_revision_and_retry_works(hub, tmp_path, instant_hub_retries, target):
    x = torch.randn(2, 3, 32, 32)
    v1, v1_dir = _release(tmp_path, "v1", seed=1)
    first = push_detector(v1_dir, "org/detector")
    v2, v2_dir = _release(tmp_path, "v2", seed=2)

    fault = hub.fail_next("*", target, status=500, count=10)  # outlasts the client's own retries
    with pytest.raises(Exception):
        push_detector(v2_dir, "org/detector")
    assert hub.head("org/detector") == first, "a failed push must not move the branch"
    with torch.no_grad():
        torch.testing.assert_close(load_detector("org/detector")(x), v1(x), rtol=0, atol=0)

    assert fault.hits >= 1
    fault.remaining = 0  # the network is back
    second = push_detector(v2_dir, "org/detector")
    assert second != first and hub.head("org/detector") == second
    assert hub.commits("org/detector")[:2] == [second, first], "one commit per release"
    with torch.no_grad():
        torch.testing.assert_close(load_detector("org/detector")(x), v2(x), rtol=0, atol=0)
