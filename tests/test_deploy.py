"""Deployment: the cluster kinds, the SLURM and Kubernetes examples, and the container image.

Job scripts are built by dask-jobqueue itself (``job_script()``: nothing is submitted), the
manifests are parsed and their commands loaded with the real config loader, the job that keeps
its data in a bucket runs against a real S3 server (moto's), and the Dockerfile's ``pip install``
lines run as written in a new virtual environment (there is no Docker engine here). A missing
optional package is made unimportable in a subprocess (``sys.modules[name] = None``), as it is
when the extra is not installed.
"""

import io
import itertools
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
import venv
import warnings
from pathlib import Path

import dask.config
import pytest
import yaml
from dask.utils import parse_bytes
from dask_jobqueue.pbs import pbs_format_bytes_ceil
from dask_jobqueue.slurm import slurm_format_bytes_ceil

from daskgmm.cluster import (
    check_cluster,
    describe_cluster,
    jobqueue_cluster_class,
    jobqueue_options,
    kubernetes_cluster_spec,
    open_client,
    scheduler_address,
)
from daskgmm.config import ClusterConfig, ConfigError, JobConfig, load_config, parse_yaml
from jobs_helpers import TINY_CLUSTER, images, run_main, write_job

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
SLURM_JOB = DEPLOY / "slurm" / "segment.yaml"
NIGHTLY_JOB = REPO / "configs" / "kubernetes" / "segment-nightly.yaml"
BUCKET_JOB = REPO / "configs" / "kubernetes" / "segment-bucket.yaml"
KUBERNETES_JOBS = sorted((REPO / "configs" / "kubernetes").glob("*.yaml"))
# The manifests of the bucket job: its runner's, and its cluster's template (cluster.spec).
BUCKET_MANIFESTS = [DEPLOY / "kubernetes" / "job-bucket.yaml",
                    DEPLOY / "kubernetes" / "daskcluster-bucket.yaml"]
ROLE_ARN = re.compile(r"arn:aws:iam::\d{12}:role/[\w+=,.@/-]+")

PBS_JOB = """
pipeline: segment
input: {path: out/scene.zarr}
output: {path: out/segment-pbs}
model: {n_components: 4}
cluster:
  kind: pbs
  queue: workq
  account: geo042
  walltime: "00:45:00"
  cores: 6
  memory: 24GiB
  n_workers: 3
"""


def run_python(*args, env=None):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=120,
                          cwd=REPO, env=env)


def cluster_error(data):
    """The ConfigError of a ``cluster`` section, from the schema or from its kind's check."""
    with pytest.raises(ConfigError) as info:
        check_cluster(ClusterConfig.from_dict(data, "cluster"))
    return info.value


# ---------------------------------------------------------------- the schema of cluster


@pytest.mark.parametrize("data, key, words", [
    ({"kind": "slurmm"}, "cluster.kind", "did you mean 'slurm'?"),
    ({"kind": "slurm", "cors": 4}, "cluster.cors", "did you mean 'cores'?"),
    ({"kind": "slurm", "cores": -4, "memory": "1GiB", "n_workers": 1}, "cluster.cores", ">= 1"),
    ({"kind": "pbs", "minimum": 5, "maximum": 2}, "cluster.minimum", "<= cluster.maximum"),
    ({"kind": "local", "minimum": 1}, "cluster.maximum", "upper bound"),
    ({"kind": "local", "n_workers": 2, "maximum": 4}, "cluster.n_workers", "not both"),
    ({"kind": "slurm", "cores": 2, "memory": "1GiB"}, "cluster.n_workers", "starts no workers"),
    ({"kind": "slurm", "memory": "1GiB", "n_workers": 1}, "cluster.cores", "jobqueue.yaml"),
    ({"kind": "slurm", "cores": 2, "memory": "lots", "n_workers": 1}, "cluster.memory", "16GiB"),
    ({"kind": "kubernetes", "queue": "normal", "n_workers": 1}, "cluster.queue",
     "only used with cluster.kind pbs or slurm"),
    ({"kind": "address", "address": "tcp://h:1", "maximum": 3}, "cluster.maximum",
     "(kind is address)"),
    ({"kind": "kubernetes", "n_workers": 1}, "cluster.image", "daskgmm installed"),
    ({"kind": "kubernetes", "n_workers": 1, "spec": str(SLURM_JOB)}, "cluster.spec",
     "DaskCluster"),
])
def test_cluster_mistakes_name_the_key(data, key, words):
    error = cluster_error(data)
    assert error.key == key and words in str(error)


@pytest.mark.parametrize("data, key", [
    ({"kind": "slurm", "cores": 2, "memory": "1GiB", "n_workers": 1, "processes": False},
     "processes"),
    ({"kind": "address", "address": "tcp://h:1", "threads_per_worker": 2}, "threads_per_worker"),
    ({"kind": "address", "address": "tcp://h:1", "memory_limit": "2GiB"}, "memory_limit"),
])
def test_local_sizing_keys_of_another_kind_are_ignored_with_a_warning(data, key):
    config = ClusterConfig.from_dict(data, "cluster")
    with pytest.warns(UserWarning, match=rf"cluster\.{key} is ignored: .*kind is {data['kind']}"):
        check_cluster(config)


def test_a_local_cluster_takes_its_sizing_keys_without_a_warning():
    config = ClusterConfig.from_dict({"threads_per_worker": 1, "memory_limit": "1GiB",
                                      "processes": False}, "cluster")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_cluster(config)


def test_cluster_sections_round_trip():
    data = JobConfig.from_dict(parse_yaml(PBS_JOB)).to_dict()
    assert JobConfig.from_dict(data).to_dict() == data
    assert data["cluster"]["cores"] == 6 and data["cluster"]["minimum"] is None


def test_an_address_alone_still_means_kind_address():
    config = ClusterConfig.from_dict({"address": "tcp://h:8786", "n_workers": 2}, "cluster")
    check_cluster(config)
    assert config.kind == "address" and scheduler_address(config) == "tcp://h:8786"


def test_kind_address_joins_the_scheduler_dask_is_configured_with():
    config = ClusterConfig.from_dict({"kind": "address"}, "cluster")
    with dask.config.set({"scheduler-address": "tcp://daskjob-scheduler:8786"}):
        check_cluster(config)
        assert "tcp://daskjob-scheduler:8786" in describe_cluster(config)


def test_adaptive_local_cluster_starts_workers_on_demand():
    config = ClusterConfig.from_dict({"kind": "local", "minimum": 0, "maximum": 1,
                                      "processes": False, "dashboard_address": ":0"}, "cluster")
    assert "adaptive from 0 to 1" in describe_cluster(config)
    with open_client(config) as client:
        assert not client.scheduler_info()["workers"]  # minimum 0: none until there is work
        assert client.submit(sum, [1, 2]).result(timeout=30) == 3


# ---------------------------------------------------------------- SLURM and PBS job scripts


def site_settings(folder):
    """Dask's settings from the YAML files in ``folder``, as dotted keys for dask.config.set."""
    collected = dask.config.collect([str(folder)], env={})

    def dotted(mapping, prefix):
        for name, value in mapping.items():
            if isinstance(value, dict):
                yield from dotted(value, f"{prefix}{name}.")
            else:
                yield f"{prefix}{name}", value

    return dict(dotted(collected, ""))


def job_script(job, tmp_path, monkeypatch):
    """The cluster section of ``job`` and dask-jobqueue's batch script for one of its workers.

    Dask's site settings are those of deploy/slurm/dask; nothing is submitted.
    """
    config = load_config(job, ["cluster.dashboard_address=:0"]).cluster
    monkeypatch.chdir(tmp_path)  # dask-jobqueue creates the log folder in the working dir
    with dask.config.set(site_settings(DEPLOY / "slurm" / "dask")):
        check_cluster(config)
        with jobqueue_cluster_class(config)(**jobqueue_options(config)) as cluster:
            return config, cluster.job_script()


def test_slurm_example_job_script_has_the_resources_of_its_yaml(tmp_path, monkeypatch):
    config, script = job_script(SLURM_JOB, tmp_path, monkeypatch)
    expected = [f"#SBATCH -p {config.queue}", f"#SBATCH -A {config.account}",
                f"#SBATCH -t {config.walltime}", f"#SBATCH --cpus-per-task={config.cores}",
                f"#SBATCH --mem={slurm_format_bytes_ceil(parse_bytes(config.memory))}",
                f"--nthreads {config.cores}", 'cd "$SLURM_SUBMIT_DIR"',
                "#SBATCH -J daskgmm-worker"]
    assert [line for line in expected if line not in script] == []
    assert config.adaptive and "slurm: dask-jobqueue SLURMCluster" in describe_cluster(config)


def test_pbs_job_script_has_the_resources_of_its_yaml(tmp_path, monkeypatch):
    (tmp_path / "pbs.yaml").write_text(PBS_JOB)
    config, script = job_script(tmp_path / "pbs.yaml", tmp_path, monkeypatch)
    expected = [f"#PBS -q {config.queue}", f"#PBS -A {config.account}",
                f"#PBS -l walltime={config.walltime}", f"ncpus={config.cores}",
                f"mem={pbs_format_bytes_ceil(parse_bytes(config.memory))}",
                f"--nthreads {config.cores}", 'cd "$PBS_O_WORKDIR"']
    assert [line for line in expected if line not in script] == []
    assert "3 worker(s)" in describe_cluster(config)


# ---------------------------------------------------------------- optional packages


@pytest.mark.slow
@pytest.mark.parametrize("blocked, job, extra", [
    ("dask_jobqueue", SLURM_JOB, "hpc"),
    ("dask_kubernetes", NIGHTLY_JOB, "kubernetes"),
])
def test_missing_optional_package_names_the_extra(tmp_path, blocked, job, extra):
    program = (f"import sys; sys.modules[{blocked!r}] = None\n"
               "from daskgmm.run import main\n"
               f"sys.exit(main([{str(job)!r}, '--set', 'output.path={tmp_path / 'out'}']))")
    done = run_python("-c", program)
    assert done.returncode == 2, done.stderr
    assert f'cluster.kind: kind {load_config(job).cluster.kind} needs' in done.stderr
    assert f'pip install "daskgmm[{extra}]"' in done.stderr
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- Kubernetes


def documented_image():
    """The tag of the ``docker build`` command in deploy/README.md."""
    (image,) = re.findall(r"docker build -f deploy/Dockerfile -t (\S+) \.",
                          (DEPLOY / "README.md").read_text())
    return image


def documents(path):
    """The manifests of one YAML file."""
    return [document for document in yaml.safe_load_all(Path(path).read_text()) if document]


def manifests():
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        yield from documents(path)


def values_of(node, key):
    """The values of ``key`` in every mapping anywhere in a parsed manifest."""
    if isinstance(node, dict):
        if key in node:
            yield node[key]
        node = list(node.values())
    if isinstance(node, list):
        for value in node:
            yield from values_of(value, key)


def containers(manifest):
    """Every container spec anywhere in a manifest."""
    return [container for listed in values_of(manifest, "containers") for container in listed]


def runner_pod(kind):
    """The pod spec of the job runner in the manifest of ``kind`` (DaskJob, CronJob or Job)."""
    (manifest,) = [m for m in manifests() if m["kind"] == kind]
    template = {"DaskJob": lambda spec: spec["job"],
                "CronJob": lambda spec: spec["jobTemplate"]["spec"]["template"],
                "Job": lambda spec: spec["template"]}[kind](manifest["spec"])
    return template["spec"]


def runner_arguments(kind):
    """The daskgmm.run arguments of the runner container in the manifest of ``kind``."""
    (container,) = runner_pod(kind)["containers"]
    return container["args"]


def service_accounts():
    """The ServiceAccounts of the manifests, by name."""
    return {m["metadata"]["name"]: m for m in manifests() if m["kind"] == "ServiceAccount"}


def test_image_tag_is_the_same_everywhere():
    image = documented_image()
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert image.endswith(f":{version}")
    assert f'org.opencontainers.image.version="{version}"' in dockerfile
    assert f"-t {image} ." in dockerfile
    images = {container["image"] for manifest in manifests() for container in containers(manifest)}
    assert images == {image}
    assert {load_config(job).cluster.image for job in KUBERNETES_JOBS} == {image}


def test_kubernetes_manifests_parse_and_name_what_exists():
    kinds = sorted(manifest["kind"] for manifest in manifests())
    assert kinds == ["CronJob", "DaskCluster", "DaskCluster", "DaskJob", "Job",
                     "PersistentVolumeClaim", "Role", "Role", "RoleBinding", "RoleBinding",
                     "ServiceAccount", "ServiceAccount", "ServiceAccount"]
    for manifest in manifests():
        if manifest["kind"].startswith("Dask"):
            assert manifest["apiVersion"] == "kubernetes.dask.org/v1"
    claims = {m["metadata"]["name"] for m in manifests() if m["kind"] == "PersistentVolumeClaim"}
    used = {claim["claimName"] for manifest in manifests()
            for claim in values_of(manifest, "persistentVolumeClaim")}
    assert used == claims
    uid = int(re.search(r"useradd .*--uid (\d+)", (DEPLOY / "Dockerfile").read_text())[1])
    pods = [pod for manifest in manifests() for pod in values_of(manifest, "spec")
            if isinstance(pod, dict) and "volumes" in pod]
    assert len(pods) == 4 and {pod["securityContext"]["fsGroup"] for pod in pods} == {uid}
    run = {}
    for kind in ("DaskJob", "CronJob", "Job"):
        config_file, *overrides = runner_arguments(kind)
        assert (REPO / config_file).is_file()
        sets = [value for flag, value in zip(overrides[::2], overrides[1::2]) if flag == "--set"]
        run[kind] = config_file
        config = load_config(REPO / config_file, sets)
        assert config.pipeline == "segment" and config.output.path.startswith(
            "s3://" if kind == "Job" else "/data/")
    assert run["Job"] == BUCKET_JOB.relative_to(REPO).as_posix()
    for job in KUBERNETES_JOBS:
        assert (REPO / load_config(job).cluster.spec).is_file()


def test_kubernetes_manifests_name_only_service_accounts_and_roles_they_define():
    accounts = service_accounts()
    roles = {m["metadata"]["name"] for m in manifests() if m["kind"] == "Role"}
    named = {name for manifest in manifests() for name in values_of(manifest,
                                                                     "serviceAccountName")}
    assert named == set(accounts)
    for binding in (m for m in manifests() if m["kind"] == "RoleBinding"):
        assert binding["roleRef"]["kind"] == "Role" and binding["roleRef"]["name"] in roles
        assert {subject["name"] for subject in binding["subjects"]} <= set(accounts)


@pytest.mark.slow
def test_daskjob_runner_joins_the_scheduler_the_operator_names(tmp_path):
    address = "tcp://daskgmm-segment-scheduler.default.svc.cluster.local:8786"
    env = {**os.environ, "DASK_SCHEDULER_ADDRESS": address}
    done = run_python("-m", "daskgmm.run", *runner_arguments("DaskJob"), "--dry-run", env=env)
    assert done.returncode == 0, done.stderr
    assert f"cluster: address: the running scheduler at {address}" in done.stdout


@pytest.mark.parametrize("job, mounts", [
    (NIGHTLY_JOB, [{"name": "data", "mountPath": "/data"}]),
    (BUCKET_JOB, None),
], ids=["nightly", "bucket"])
def test_kubernetes_cluster_spec_from_the_jobs(job, mounts):
    config = load_config(job).cluster
    check_cluster(config)
    spec = kubernetes_cluster_spec(config)
    name = spec["metadata"]["name"]
    assert name.startswith("daskgmm-")
    assert name != kubernetes_cluster_spec(config)["metadata"]["name"]  # each run its own
    assert spec["spec"]["scheduler"]["service"]["selector"]["dask.org/cluster-name"] == name
    assert spec["spec"]["idleTimeout"] > 0
    worker = spec["spec"]["worker"]
    assert worker["replicas"] == config.minimum
    (container,) = worker["spec"]["containers"]
    memory = str(parse_bytes(config.memory))
    assert container["resources"]["limits"] == {"cpu": str(config.cores), "memory": memory}
    command = shlex.join(container["command"])
    assert f"--nthreads {config.cores}" in command and f"--memory-limit {memory}" in command
    assert command.count("--nthreads") == 1
    assert container.get("volumeMounts") == mounts
    assert {c["image"] for c in containers(spec)} == {config.image}


def test_kubernetes_cluster_spec_from_the_operator_template():
    config = ClusterConfig.from_dict({"kind": "kubernetes", "image": "registry/daskgmm:1",
                                      "n_workers": 3, "cores": 2, "memory": "4GiB"}, "cluster")
    check_cluster(config)
    spec = kubernetes_cluster_spec(config)
    scheduler, worker = (spec["spec"][role]["spec"]["containers"][0]
                         for role in ("scheduler", "worker"))
    # The image's entrypoint is the job runner: dask must be the command, not its arguments.
    assert scheduler["command"][:2] == ["dask", "scheduler"] and "args" not in scheduler
    assert worker["command"][:2] == ["dask", "worker"] and "args" not in worker
    assert spec["spec"]["worker"]["replicas"] == 3
    assert worker["resources"]["requests"] == {"cpu": "2", "memory": str(4 * 2**30)}


# ---------------------------------------------------------------- Kubernetes, data in a bucket


def credential_env(container):
    """The container's AWS_* environment variables, by name."""
    return {entry["name"]: entry for entry in container.get("env", [])
            if entry["name"].startswith("AWS_")}


def assert_credentials_by_reference(pod):
    """The pod runs as a service account with an IAM role (IRSA), and its containers take the
    keys only from the optional Secret daskgmm-s3: no value is written in the manifest."""
    account = service_accounts()[pod["serviceAccountName"]]
    assert ROLE_ARN.fullmatch(account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"])
    for container in pod["containers"]:
        env = credential_env(container)
        assert sorted(env) == ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
        for name, entry in env.items():
            assert entry == {"name": name, "valueFrom": {"secretKeyRef": {
                "name": "daskgmm-s3", "key": name, "optional": True}}}


def test_the_bucket_job_loads_with_its_data_in_s3():
    config = load_config(BUCKET_JOB)  # which refuses a secret among the storage options
    assert config.pipeline == "segment" and config.batch is None
    assert config.input.path.startswith("s3://") and config.output.path.startswith("s3://")
    assert config.input.generate is None  # generate looks for its input on the local disk
    assert "region" in yaml.safe_load(BUCKET_JOB.read_text())["storage"]["s3"]
    assert config.storage.s3.region and not config.storage.s3.anon


def test_the_bucket_manifests_mount_nothing_and_take_credentials_only_by_reference():
    for path in BUCKET_MANIFESTS:
        text = path.read_text()
        assert not re.search(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b", text)  # no access key id
        assert not [value for document in documents(path)
                    for key in ("volumes", "volumeMounts", "persistentVolumeClaim")
                    for value in values_of(document, key)], path
    assert "Secret" not in {manifest["kind"] for manifest in manifests()}
    assert_credentials_by_reference(runner_pod("Job"))
    (template,) = documents(REPO / load_config(BUCKET_JOB).cluster.spec)
    assert_credentials_by_reference(template["spec"]["worker"]["spec"])


def test_the_bucket_jobs_workers_get_the_credentials_of_its_runner():
    config = load_config(BUCKET_JOB).cluster
    check_cluster(config)
    spec = kubernetes_cluster_spec(config)
    runner = runner_pod("Job")
    worker = spec["spec"]["worker"]["spec"]
    assert worker["serviceAccountName"] in service_accounts()
    assert worker["serviceAccountName"] != runner["serviceAccountName"]  # no Kubernetes rights
    assert (service_accounts()[worker["serviceAccountName"]]["metadata"]["annotations"]
            == service_accounts()[runner["serviceAccountName"]]["metadata"]["annotations"])
    (container,) = worker["containers"]
    assert credential_env(container) == credential_env(runner["containers"][0])
    scheduler = spec["spec"]["scheduler"]["spec"]  # never touches the data
    assert "serviceAccountName" not in scheduler
    assert not credential_env(scheduler["containers"][0])
    assert not list(values_of(spec, "volumes")) and not list(values_of(spec, "volumeMounts"))


def put_pngs(fs, folder, pictures):
    """Write ``pictures`` as PNG objects ``image-N.png`` under ``folder`` of a bucket."""
    from PIL import Image

    for number, picture in enumerate(pictures):
        buffer = io.BytesIO()
        Image.fromarray(picture).save(buffer, format="PNG")
        fs.pipe(f"{folder}/image-{number}.png", buffer.getvalue())


@pytest.mark.slow
def test_the_bucket_job_keeps_everything_in_the_bucket(tmp_path, bucket, monkeypatch):
    """The bucket job as written, but in a bucket of moto's server and on a cluster in this
    process: it reads its images and writes its output (and what it ingests) in the bucket, and
    nothing on the local disk, which the runner and the workers do not share on Kubernetes."""
    import zarr

    spec = yaml.safe_load(BUCKET_JOB.read_text())
    keys = {name: spec[name]["path"].split("/", 3)[3] for name in ("input", "output")}
    for name, key in keys.items():  # the same keys in the test's bucket
        spec[name]["path"] = bucket.url(key)
    spec["storage"]["s3"]["endpoint_url"] = bucket.endpoint_url
    spec["cluster"] = TINY_CLUSTER
    scenes, results = (keys[name].split("/")[0] for name in ("input", "output"))
    put_pngs(bucket.fs, f"{bucket.name}/{scenes}", images())
    inputs = bucket.fs.find(f"{bucket.name}/{scenes}", detail=True)
    job_file = write_job(tmp_path / "job.yaml", spec)
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    status, out, err = run_main(job_file)
    assert status == 0, err
    assert list((tmp_path / "work").iterdir()) == []
    assert {key.split("/")[1] for key in bucket.fs.find(bucket.name)} == {scenes, results}
    assert bucket.fs.find(f"{bucket.name}/{scenes}", detail=True) == inputs
    result = zarr.open_group(f"{spec['output']['path']}/result.zarr", mode="r",
                             storage_options={"endpoint_url": bucket.endpoint_url})
    assert result.attrs["daskgmm"]["complete"] is True
    assert result["labels"].shape == images().shape[:3]


# ---------------------------------------------------------------- the Dockerfile


def dockerfile_instructions():
    """``(instruction, arguments)`` of deploy/Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [tuple(line.split(None, 1)) for line in lines if line and not line.startswith("#")]


def ignored_patterns():
    lines = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    return [line.removeprefix("**/") for line in lines if line and not line.startswith("#")]


def emulate_copy(arguments, workdir):
    """Do what COPY does, from the repository (the build context) into the emulated image."""
    *sources, target = shlex.split(arguments)
    for source in sources:
        origin = REPO / source
        destination = workdir / target
        if origin.is_dir():
            shutil.copytree(origin, destination, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns(*ignored_patterns()))
        else:
            if target.endswith("/"):
                destination = destination / origin.name
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, destination)


def pip_commands(arguments):
    """The ``pip install`` commands of a RUN line (build mounts and other commands left out)."""
    words = shlex.split(arguments)
    while words and words[0].startswith("--mount"):
        words.pop(0)
    commands = [list(group) for is_and, group in itertools.groupby(words, lambda w: w == "&&")
                if not is_and]
    return [command for command in commands if command[:2] == ["pip", "install"]]


def emulate_files(instructions, root):
    """Do the image's WORKDIR and COPY steps under ``root``; yield ``(instruction, arguments,
    working directory)`` of the others, in order."""
    workdir = root
    for instruction, arguments in instructions:
        if instruction == "WORKDIR":
            workdir = root / arguments.lstrip("/")
            workdir.mkdir(parents=True, exist_ok=True)
        elif instruction == "COPY":
            emulate_copy(arguments, workdir)
        else:
            yield instruction, arguments, workdir


def test_the_image_holds_the_config_and_cluster_template_of_every_kubernetes_job(tmp_path):
    """The COPY lines, emulated: each job of configs/kubernetes and its cluster.spec is in the
    image's working directory, where the runner (args: the config) and cluster.spec name them."""
    instructions = dockerfile_instructions()
    list(emulate_files(instructions, tmp_path))  # its RUN steps: the install test below
    workdir = tmp_path / dict(instructions)["WORKDIR"].lstrip("/")
    for job in KUBERNETES_JOBS:
        assert (workdir / job.relative_to(REPO)).is_file()
        assert (workdir / load_config(job).cluster.spec).is_file()


@pytest.mark.slow
def test_dockerfile_installs_in_a_fresh_environment(tmp_path):
    """Run the image's install steps (COPY, WORKDIR, RUN pip) in a new venv under tmp_path.

    Each ``pip install`` runs as written, plus ``--no-compile`` (speed only: the image compiles
    its bytecode, which changes nothing that is installed).
    """
    instructions = dockerfile_instructions()
    settings = dict(instructions)
    assert settings["FROM"] == "python:3.11-slim"
    assert settings["USER"] not in ("root", "0")
    assert yaml.safe_load(settings["ENTRYPOINT"]) == ["python", "-m", "daskgmm.run"]
    assert yaml.safe_load(settings["CMD"]) == ["configs/segment.yaml"]
    root = tmp_path / "image"
    environment = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(environment)
    python = environment / "bin" / "python"
    installs = 0
    for instruction, arguments, workdir in emulate_files(instructions, root):
        for command in pip_commands(arguments) if instruction == "RUN" else ():
            done = subprocess.run([str(python), "-m", *command, "--no-compile", "-q"],
                                  cwd=workdir, capture_output=True, text=True, timeout=900)
            assert done.returncode == 0, done.stderr[-3000:]
            installs += 1
    assert installs == 2
    workdir = root / settings["WORKDIR"].lstrip("/")
    checks = [["-m", "pip", "check"],  # the lock has every requirement of daskgmm[kubernetes]
              ["-m", "daskgmm.run", "--help"],
              ["-c", "import daskgmm, dask_kubernetes.operator, bokeh, s3fs"],
              ["-m", "daskgmm.run", *yaml.safe_load(settings["CMD"]), "--dry-run"],
              ["-m", "daskgmm.run", "configs/kubernetes/segment-nightly.yaml", "--dry-run"]]
    for check in checks:
        done = subprocess.run([str(python), *check], cwd=workdir, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, (check, done.stderr[-3000:])
    assert not (workdir / "daskgmm").exists()  # the installed package ran, not a source copy
