"""Pipeline strings: parsing, typed options, errors that name what is wrong, canonical form."""

from __future__ import annotations

import dataclasses

import pytest

from kiln.errors import KilnError
from kiln.ir import Model
from kiln.passes import (
    Pass,
    PassResult,
    available_passes,
    available_pipelines,
    format_pipeline,
    get_pass,
    get_pipeline,
    parse_pipeline,
    register_pass,
)
from kiln.passes.pipelines import pipeline_string


@register_pass
class _Typed(Pass):
    """A test-only pass with one option of each kind a pipeline string can give."""

    name = "test-typed-options"

    @dataclasses.dataclass(frozen=True)
    class Options:
        eps: float = 1e-3
        keep: bool = False
        count: int = 2
        mode: str = "fast"
        axes: tuple[int, ...] = ()
        limit: int | None = None

    def call(self, model: Model) -> PassResult:
        return PassResult(model, False)


@register_pass
class _Plain(Pass):
    name = "test-plain"

    def call(self, model: Model) -> PassResult:
        return PassResult(model, False)


def test_options_are_typed_from_the_dataclass():
    (p,) = parse_pipeline(
        "test-typed-options{eps=1e-5,keep=true,count=7,mode=slow,axes=[0,-1],limit=none}"
    )
    assert isinstance(p, _Typed)
    assert p.options == _Typed.Options(eps=1e-5, keep=True, count=7, mode="slow",
                                       axes=(0, -1), limit=None)
    assert type(p.options.eps) is float and type(p.options.count) is int
    (q,) = parse_pipeline("test-typed-options{limit=64, mode=\"a,b{c}\"}")
    assert q.options.limit == 64 and q.options.mode == "a,b{c}"


def test_a_list_of_names_and_instances():
    given = _Typed(count=3)
    passes = parse_pipeline(["test-plain", given, "test-plain,test-typed-options{keep=true}"])
    assert [p.name for p in passes] == ["test-plain", "test-typed-options", "test-plain",
                                        "test-typed-options"]
    assert passes[1] is given
    assert parse_pipeline(given) == [given]
    assert parse_pipeline("") == [] and parse_pipeline([]) == []


@pytest.mark.parametrize("text", [
    "test-plain",
    "test-plain,test-typed-options{eps=1e-5,keep=true},test-plain",
    "test-typed-options{count=-4,mode=\"x y\",axes=[1,2,3],limit=8}",
    "test-typed-options{eps=0.25,mode=\"true\"}",
    "test-typed-options{eps=1e20}",
    "",
])
def test_canonical_form_round_trips(text):
    assert format_pipeline(parse_pipeline(text)) == text


def test_canonical_form_drops_defaults_and_spaces():
    text = " test-typed-options{ keep=false , count=2, eps=0.001 } , test-plain "
    assert format_pipeline(parse_pipeline(text)) == "test-typed-options,test-plain"


@pytest.mark.parametrize(("text", "fragments"), [
    ("test-plain,no-such-pass", ["unknown pass 'no-such-pass'", "test-plain"]),
    ("test-typed-options{colour=red}",
     ["unknown option 'colour'", "eps, keep, count, mode, axes, limit"]),
    ("test-plain{x=1}", ["unknown option 'x'", "options: none"]),
    ("test-typed-options{count=1.5}", ["count='1.5'", "expected an integer"]),
    ("test-typed-options{keep=yes}", ["keep='yes'", "expected true or false"]),
    ("test-typed-options{eps=big}", ["eps='big'", "expected a number"]),
    ("test-typed-options{axes=1}", ["axes='1'", "expected a list"]),
    ("test-typed-options{axes=[1,x]}", ["axes=", "expected an integer"]),
    ("test-typed-options{limit=lots}", ["limit='lots'", "expected an integer"]),
    ("test-typed-options{count}", ["expected KEY=VALUE"]),
    ("test-typed-options{count=1,count=2}", ["given twice"]),
    ("test-typed-options{count=1", ["unclosed brace"]),
    ("test-plain}", ["unbalanced"]),
    ("test-plain,,test-plain", ["empty pass name"]),
])
def test_errors_name_what_is_wrong(text, fragments):
    with pytest.raises(KilnError) as info:
        parse_pipeline(text)
    message = str(info.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, message


def test_non_pass_items_are_refused():
    with pytest.raises(KilnError, match="pass names or Pass instances"):
        parse_pipeline([42])


def test_named_pipelines():
    assert available_pipelines() == ["backend", "default", "none"]
    assert get_pipeline("none") == []
    default = get_pipeline("default")
    names = [p.name for p in default]
    # every registered clean-up and fusion pass, each once, except the backend-only
    # epilogues; dead code and the sort last
    builtin = sorted(n for n in available_passes()
                     if get_pass(n).__module__.startswith(("kiln.passes.cleanup",
                                                           "kiln.passes.fusion")))
    assert sorted([*names, "fuse-epilogues"]) == builtin and len(set(names)) == len(names)
    assert names[-2:] == ["eliminate-dead-code", "topological-sort"]
    assert pipeline_string("default") == ",".join(names)
    backend = [p.name for p in get_pipeline("backend")]
    assert sorted(backend) == builtin and backend[-2:] == names[-2:]
    with pytest.raises(KilnError,
                       match="unknown pipeline 'O9'; pipelines: backend, default, none"):
        get_pipeline("O9")
