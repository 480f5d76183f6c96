#!/usr/bin/env bash
# Regenerates src/RootDtd/Models/Onnx/OnnxSubset.g.cs from src/RootDtd/Models/Onnx/onnx-subset.proto with the protoc
# of the Google.Protobuf.Tools NuGet package (restored into the NuGet cache by tools/protoc.csproj).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
version=3.36.2
dotnet restore "$root/tools/protoc/protoc.csproj" >/dev/null
packages="${NUGET_PACKAGES:-$HOME/.nuget/packages}"
case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) platform=linux_x64 ;;
  Linux-aarch64) platform=linux_aarch64 ;;
  Darwin-*) platform=macosx_x64 ;;
  *) platform=windows_x64 ;;
esac
protoc="$packages/google.protobuf.tools/$version/tools/$platform/protoc"
chmod +x "$protoc" 2>/dev/null || true
out="$(mktemp -d)"
"$protoc" --proto_path="$root/src/RootDtd/Models/Onnx" --csharp_out="$out" --csharp_opt=internal_access,file_extension=.g.cs onnx-subset.proto
mv "$out/OnnxSubset.g.cs" "$root/src/RootDtd/Models/Onnx/OnnxSubset.g.cs"
rm -rf "$out"
echo "wrote src/RootDtd/Models/Onnx/OnnxSubset.g.cs"
