"""Every DoFn and CombineFn of beam_gbif survives Beam's pickler after construction.

Instances come from the real pipeline graphs (each source, with the options that switch on
every stage), so they are built the way Dataflow builds them (``from_options``); classes
that no graph here uses are constructed from their signature or from CONSTRUCTORS. Any
class found in the package and constructible by none of these fails the test by name.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.internal import pickler
from apache_beam.options.pipeline_options import PipelineOptions

import beam_gbif
from beam_gbif.testing.fake_gbif import FakeGbifApi
from beam_gbif.testing.synthetic import SyntheticOccurrences
from beam_gbif.transforms.manifest import ManifestSettings
from pipelines.gbif_media import build, make_options
from pipelines.options import GbifMediaOptions

# Classes whose constructor needs something the signature alone cannot supply: a factory.
CONSTRUCTORS: dict[str, Callable[[], Any]] = {}

def beam_gbif_modules() -> Iterator[Any]:
    root = Path(beam_gbif.__file__).parent
    yield beam_gbif
    for info in pkgutil.walk_packages([str(root)], prefix="beam_gbif."):
        yield importlib.import_module(info.name)


def fn_classes() -> dict[str, type]:
    found = {}
    for module in beam_gbif_modules():
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__ and issubclass(cls, (beam.DoFn, beam.CombineFn)):
                found[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return found


def qualified(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def graph_fns(pipeline: beam.Pipeline) -> list[Any]:
    """Every DoFn and CombineFn instance in the pipeline graph."""
    fns: list[Any] = []

    class Collect(beam.pipeline.PipelineVisitor):
        def _take(self, node: Any) -> None:
            fn = getattr(node.transform, "fn", None)
            if isinstance(fn, (beam.DoFn, beam.CombineFn)):
                fns.append(fn)

        def enter_composite_transform(self, node: Any) -> None:
            self._take(node)

        def visit_transform(self, node: Any) -> None:
            self._take(node)

    pipeline.visit(Collect())
    return fns


@pytest.fixture(scope="module")
def graph_instances(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> dict[str, list[Any]]:
    """DoFns/CombineFns of the full pipeline, built from options for the urls, dwca and api sources."""
    folder = tmp_path_factory.mktemp("pickling")
    listing = folder / "urls.csv"
    listing.write_text("url,label,split\nhttp://127.0.0.1:9/a.jpg,a,\nhttp://127.0.0.1:9/b.jpg,b,test\n", encoding="utf-8")
    common = ["--runner=FnApiRunner", f"--output={folder / 'out'}", "--licenses=CC0_1_0,CC_BY_4_0", "--random_subsets=train=0.9,test=0.1",
              "--split_streams_by=speciesKey", "--nb_samples=10", "--allow_private_hosts"]
    argvs = [
        [f"--input={listing}", "--label=label"],
        [f"--dwca={shared_data / 'dwca' / '0026367-210914110416597.zip'}", f"--dwca_root_path={folder / 'dwca'}", "--label=speciesKey"],
        [f"--retry_failed_from={folder / 'earlier'}", f"--output={folder / 'earlier'}"],  # into an output with a manifest: the carry-over
    ]
    _write_earlier_manifest(folder / "earlier")
    api = FakeGbifApi(SyntheticOccurrences([5352251], ["ds-a"], per_stream=5, media_base_url="http://127.0.0.1:9")).start()
    argvs.append([f"--gbif_api_url={api.base_url}", '--query={"speciesKey": [5352251]}', "--label=speciesKey", "--per_host_rate=2",
                  "--weighted_streams"])  # two-pass sampling: its records wait on disk
    instances: dict[str, list[Any]] = {}
    try:
        for argv in argvs:
            options = make_options(common + argv)
            pipeline = beam.Pipeline(options=options)
            build(pipeline, options)
            for fn in graph_fns(pipeline):
                instances.setdefault(qualified(fn), []).append(fn)
    finally:
        api.stop()
    return instances


def _write_earlier_manifest(output: Path) -> None:
    from beam_gbif.core.records import MediaRecord
    from beam_gbif.transforms.manifest import WriteManifest

    record = MediaRecord(url="http://127.0.0.1:9/x.jpg", label="x", occurrence_key=1, status="FAILED_HTTP")
    with beam.Pipeline(options=PipelineOptions(["--runner=FnApiRunner"])) as pipeline:
        pipeline | beam.Create([record]) | WriteManifest(ManifestSettings(output=str(output)))


def realistic_options() -> GbifMediaOptions:
    argv = ["--output=/tmp/beam-gbif-pickling", '--query={"speciesKey": [5352251]}', "--random_subsets=train=0.9,test=0.1",
            "--licenses=CC_BY_4_0", "--split_streams_by=speciesKey"]
    return PipelineOptions(argv).view_as(GbifMediaOptions)


_VALUES_BY_TYPE: dict[Any, Any] = {str: "x", int: 1, float: 1.0, bool: False, bytes: b"x"}


def _value_for(parameter: inspect.Parameter, hint: Any) -> Any:
    if parameter.name == "options" or hint is GbifMediaOptions:
        return realistic_options()
    origin = typing.get_origin(hint) or hint
    if hint in _VALUES_BY_TYPE:
        return _VALUES_BY_TYPE[hint]
    if origin in (list, tuple, set, frozenset, dict):
        return origin()
    if typing.get_origin(hint) is typing.Union or type(hint).__name__ == "UnionType":
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return _value_for(parameter, args[0]) if args else None
    origin_name = getattr(origin, "__name__", "")
    if origin_name in ("Sequence", "Iterable", "Collection"):
        return ()
    if origin_name == "Mapping":
        return {}
    raise TypeError(f"cannot synthesise {parameter.name}: {hint!r}")


def construct(cls: type) -> Any:
    """An instance from CONSTRUCTORS, from_options, or values synthesised from the signature."""
    name = f"{cls.__module__}.{cls.__qualname__}"
    if name in CONSTRUCTORS:
        return CONSTRUCTORS[name]()
    if hasattr(cls, "from_options"):
        return cls.from_options(realistic_options())
    hints = typing.get_type_hints(cls.__init__)
    kwargs = {}
    for parameter in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD) or parameter.default is not parameter.empty:
            continue
        kwargs[parameter.name] = _value_for(parameter, hints.get(parameter.name, Any))
    return cls(**kwargs)


def roundtrip(fn: Any) -> Any:
    restored = pickler.loads(pickler.dumps(fn))
    assert type(restored).__qualname__ == type(fn).__qualname__
    # The restored object has exactly the attributes of the original: none was lost in pickling.
    assert set(vars(restored)) == set(vars(fn)), qualified(fn)
    return restored


def test_every_module_imports_and_the_package_has_fns_to_check() -> None:
    modules = {module.__name__ for module in beam_gbif_modules()}
    assert {"beam_gbif.transforms.manifest", "beam_gbif.transforms.download", "beam_gbif.testing.media_server"} <= modules
    names = set(fn_classes())
    assert "beam_gbif.transforms.stats.StatsCombineFn" in names and "beam_gbif.transforms.sources.url_list._ReadListFile" in names


def test_every_fn_in_the_pipeline_graphs_pickles(graph_instances: dict[str, list[Any]]) -> None:
    assert "beam_gbif.transforms.stats.StatsCombineFn" in graph_instances
    for instances in graph_instances.values():
        for fn in instances:
            roundtrip(fn)


def test_every_fn_class_of_the_package_is_covered_and_pickles(graph_instances: dict[str, list[Any]]) -> None:
    failures = []
    for name, cls in sorted(fn_classes().items()):
        if name in graph_instances:
            continue
        try:
            roundtrip(construct(cls))
        except Exception as exc:  # noqa: BLE001 - collected and reported together, by class
            failures.append(f"{name}: {type(exc).__name__}: {exc}")
    assert not failures, "not constructible or not picklable (add a factory to CONSTRUCTORS if needed):\n" + "\n".join(failures)


def test_records_and_options_pickle() -> None:
    from beam_gbif.core.records import MediaRecord
    from beam_gbif.transforms.coders import MediaRecordCoder

    record = MediaRecord(url="http://127.0.0.1:9/a.jpg", label="Amanita muscaria", occurrence_key=3, stream=("a", "b"))
    assert pickler.loads(pickler.dumps(record)) == record
    assert MediaRecordCoder().decode(MediaRecordCoder().encode(record)) == record
    options = realistic_options()
    assert pickler.loads(pickler.dumps(options)).get_all_options() == options.get_all_options()
