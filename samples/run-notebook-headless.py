"""Runs a Polyglot (.NET Interactive) notebook headless through `dotnet-interactive stdio` and prints what every cell
produced (MIME types, number of inline PNGs, stdout, errors); writes the notebook with outputs to OUT and fails when an
inline PNG carries a metadata chunk (EXIF, XMP, text). Run it in a scratch WORKDIR holding the notebook's images/
(the notebook writes comparison.png there); with .NET 10 only, set DOTNET_ROLL_FORWARD=Major.

  dotnet tool install --tool-path /tmp/di Microsoft.dotnet-interactive --version 1.0.712001
  dotnet pack src/RootDtd.Imaging -c Release -o /tmp/feed -p:Version=0.1.0-nb1
  dotnet pack src/RootDtd -c Release -o /tmp/feed -p:Version=0.1.0-nb1
  python3 samples/run-notebook-headless.py samples/explain-an-image.ipynb /tmp/out.ipynb 0.1.0-nb1 /tmp/feed [workdir]

The first code cell's commented `#i` line is replaced by the feed and the RootDtd package versions by VERSION.
Set DOTNET_INTERACTIVE to the dotnet-interactive executable (default /tmp/di/dotnet-interactive).
"""
import json, subprocess, sys, threading, queue, time, re, os
nb_path, out_path, version, feed = sys.argv[1:5]
nb = json.load(open(nb_path))
workdir = sys.argv[5] if len(sys.argv) > 5 else "/tmp/nbwork"
os.makedirs(workdir, exist_ok=True)
p = subprocess.Popen([os.environ.get("DOTNET_INTERACTIVE", "/tmp/di/dotnet-interactive"), "stdio", "--default-kernel", "csharp", "--working-dir", workdir],
                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1, cwd=workdir)
q = queue.Queue()
def reader():
    for line in p.stdout: q.put(line)
    q.put(None)
threading.Thread(target=reader, daemon=True).start()
def events(until_token=None, timeout=900):
    end = time.time() + timeout
    while time.time() < end:
        try: line = q.get(timeout=5)
        except queue.Empty: continue
        if line is None: return
        line = line.strip()
        if not line.startswith("{"):
            print("  [raw]", line[:200]); continue
        try: msg = json.loads(line)
        except Exception: print("  [bad json]", line[:200]); continue
        yield msg
    print("  TIMEOUT")
# wait for kernel ready
for m in events(timeout=180):
    et = m.get("eventType")
    if et == "KernelReady": print("kernel ready"); break
n = 0
for cell in nb["cells"]:
    if cell["cell_type"] != "code": continue
    code = "".join(cell["source"])
    if n == 0:  # point the first cell at the local feed and version
        code = code.replace('// #i "nuget: /absolute/path/to/rootdtd-feed"', f'#i "nuget: {feed}"').replace("RootDtd, 0.1.0", f"RootDtd, {version}").replace("RootDtd.Imaging, 0.1.0", f"RootDtd.Imaging, {version}")
    n += 1
    token = f"cell{n}"
    print(f"=== cell {n}: {code.splitlines()[0][:80]}")
    t0 = time.time()
    p.stdin.write(json.dumps({"token": token, "commandType": "SubmitCode", "command": {"code": code, "targetKernelName": "csharp"}}) + "\n"); p.stdin.flush()
    outputs = []; displayed = {}
    for m in events():
        et = m.get("eventType"); ev = m.get("event", {})
        cmd_token = (m.get("command") or {}).get("token", "")
        if et in ("ReturnValueProduced", "DisplayedValueProduced", "DisplayedValueUpdated"):
            fv = {f["mimeType"]: f["value"] for f in ev.get("formattedValues", [])}
            html = fv.get("text/html", ""); plain = fv.get("text/plain", "")
            imgs = re.findall(r'data:image/png;base64,', html)
            if et != "DisplayedValueUpdated":
                print(f"  {et}: mime={list(fv)} html_len={len(html)} pngs={len(imgs)} html_head={html[:150]!r} plain={plain[:200]!r}")
            output = {"output_type": "execute_result" if et == "ReturnValueProduced" else "display_data", "data": fv, "metadata": {}, **({"execution_count": n} if et == "ReturnValueProduced" else {})}
            value_id = ev.get("valueId")
            if et == "DisplayedValueUpdated" and value_id in displayed:
                outputs[displayed[value_id]] = output   # an update replaces its display (e.g. the package-restore progress)
            else:
                if value_id: displayed[value_id] = len(outputs)
                outputs.append(output)
        elif et == "StandardOutputValueProduced":
            v = {f["mimeType"]: f["value"] for f in ev.get("formattedValues", [])}.get("text/plain", "")
            print("  stdout:", v.strip()[:300]); outputs.append({"output_type": "stream", "name": "stdout", "text": v})
        elif et in ("StandardErrorValueProduced", "ErrorProduced", "DiagnosticsProduced"):
            print(f"  {et}:", json.dumps(ev)[:600])
        elif et == "CommandFailed" and token in json.dumps(m.get("command", {})):
            print("  FAILED:", ev.get("message", "")[:1500]); break
        elif et == "CommandSucceeded" and token in json.dumps(m.get("command", {})):
            print(f"  ok ({time.time()-t0:.0f} s)"); break
    cell["outputs"] = outputs
    cell["execution_count"] = n
# The inline PNGs must hold pixels only: no EXIF (eXIf), XMP (iTXt) or text chunks of the source photo.
import base64, struct
chunk_types, pngs = set(), 0
for cell in nb["cells"]:
    for output in cell.get("outputs", []):
        for value in output.get("data", {}).values():
            for b64 in re.findall(r'data:image/png;base64,([A-Za-z0-9+/=]+)', value if isinstance(value, str) else "".join(value)):
                png, i = base64.b64decode(b64), 8
                pngs += 1
                while i + 8 <= len(png):
                    length, = struct.unpack(">I", png[i:i + 4]); chunk_types.add(png[i + 4:i + 8].decode("latin1")); i += 12 + length
print(f"{pngs} inline PNGs, chunk types {sorted(chunk_types)}")
metadata = chunk_types - {"IHDR", "PLTE", "IDAT", "IEND"}
open(out_path, "w").write(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
p.stdin.close(); p.terminate()
if metadata: sys.exit(f"metadata chunks in the inline PNGs: {sorted(metadata)}")
