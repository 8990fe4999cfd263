"""Run several configs of one GPU sweep script side by side on one GPU and merge their JSON into $OUT/NAME.json.

    parallel.py SCRIPT CONFIGS_JSON NAME [SECONDS]

Small models leave an H200 idle between steps and each process compiles on its own CPU core, so N configs at once
take far less than N times one (14 MobileNetV2 settings of 6-12 epochs: 402 s together, about 110 s each alone).
Every process writes its part under /tmp/parts; the merge is rewritten every 10 s, so whatever finished comes back
even when SECONDS runs out and the rest are stopped.
"""
import glob, json, os, subprocess, sys, time

script, configs, name = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
limit = float(sys.argv[4]) if len(sys.argv) > 4 else 500
out, parts = os.environ["OUT"], "/tmp/parts"
os.makedirs(parts, exist_ok=True)
for stale in glob.glob(f"{parts}/part*.json"):  # an earlier sweep's parts on the same machine
    os.remove(stale)
env = dict(os.environ, OUT=parts, XLA_PYTHON_CLIENT_PREALLOCATE="false")
log = open(os.path.join(out, f"{name}.log"), "w")
procs = [subprocess.Popen([sys.executable, script, json.dumps([cfg]), f"part{i:02d}"], env=env, stdout=log,
                          stderr=subprocess.STDOUT) for i, cfg in enumerate(configs)]


def merge():
    merged = {}
    for path in sorted(glob.glob(f"{parts}/part*.json")):
        try:
            merged.update(json.load(open(path)))
        except ValueError:  # a part being rewritten right now; the next merge takes it
            pass
    json.dump(merged, open(os.path.join(out, f"{name}.json"), "w"), indent=1)


start = time.time()
while any(p.poll() is None for p in procs) and time.time() - start < limit:
    time.sleep(10)
    merge()
for p in procs:
    if p.poll() is None:
        p.kill()
time.sleep(2)
merge()
print(f"{sum(p.returncode == 0 for p in procs)}/{len(procs)} configs finished in {time.time() - start:.0f} s")
