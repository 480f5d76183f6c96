using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace RootDtd.Graph;

/// <summary>The kind of linear map a <see cref="LinearUnit"/> computes.</summary>
public enum LinearUnitKind
{
    /// <summary>A dense layer: <c>y = x·Wᵀ + b</c> on the last axis of inputs [B, F] or [B, …, F] (e.g. tokens [B, N, D]).</summary>
    Dense,

    /// <summary>A 2-D convolution on inputs of shape [B, C, H, W].</summary>
    Convolution2d,

    /// <summary>A 1-D convolution on inputs of shape [B, C, L].</summary>
    Convolution1d,

    /// <summary>A 3-D convolution on inputs of shape [B, C, D, H, W].</summary>
    Convolution3d,
}

/// <summary>
/// A linear map of one node input with everything else held at its recorded value: a dense layer on any rank, a
/// convolution (1-D, 2-D, 3-D), a product of two activations with one operand held constant, a LayerNorm with σ held
/// constant, a sum. The rule engine needs its transpose (the vector-Jacobian product); root solvers also its forward.
/// </summary>
public interface ILinearMap
{
    /// <summary>The map without its offset (bias): <c>A·x</c>.</summary>
    Tensor Apply(Tensor input);

    /// <summary>The transposed map <c>Aᵀ·g</c> for an input of shape <paramref name="inputShape"/>.</summary>
    Tensor Transpose(Tensor outputGradient, long[] inputShape);
}

/// <summary>
/// A conv/linear layer of the relevance graph with its effective parameters (after canonizers such as BatchNorm
/// merging). Rules evaluate the layer with modified inputs and parameters through <see cref="Forward(Tensor, Tensor, Tensor?)"/>; modified
/// parameters are cached per unit (<see cref="GetParameter"/>) so that repeated explanations do not recompute them.
/// </summary>
public sealed class LinearUnit : ILinearMap, IDisposable
{
    private readonly Dictionary<string, Tensor> _cache = new();
    private readonly Dictionary<(long Start, long Length), LinearUnit> _slices = new();
    private readonly long[] _stride;
    private readonly long[] _padding;
    private readonly long[] _dilation;
    private readonly long _groups;

    private LinearUnit(LinearUnitKind kind, Tensor weight, Tensor? bias, long[] stride, long[] padding, long[] dilation, long groups)
    {
        Kind = kind;
        Weight = weight;
        Bias = bias;
        _stride = stride;
        _padding = padding;
        _dilation = dilation;
        _groups = groups;
    }

    /// <summary>Dense or convolution (1-D, 2-D, 3-D).</summary>
    public LinearUnitKind Kind { get; }

    /// <summary>The effective weight ([out, in] or [out, in/groups, kh, kw]); detached, owned by the unit.</summary>
    public Tensor Weight { get; private set; }

    /// <summary>The effective bias ([out]) or <c>null</c> when the layer has none.</summary>
    public Tensor? Bias { get; private set; }

    /// <summary>Number of convolution groups (1 for dense layers).</summary>
    public long Groups => Kind == LinearUnitKind.Dense ? 1 : _groups;

    /// <summary>Number of input features (dense) or input channels (convolution).</summary>
    public long InputFeatures => Kind == LinearUnitKind.Dense ? Weight.shape[1] : Weight.shape[1] * _groups;

    /// <summary>Number of output features or channels.</summary>
    public long OutputFeatures => Weight.shape[0];

    /// <summary>Creates a dense unit from a weight [out, in] and optional bias [out]. The tensors are copied.</summary>
    public static LinearUnit Dense(Tensor weight, Tensor? bias)
    {
        if (weight.dim() != 2) throw new ArgumentException($"A dense weight must have shape [out, in]; got [{string.Join(", ", weight.shape)}].", nameof(weight));
        return new LinearUnit(LinearUnitKind.Dense, Own(weight), bias is null ? null : Own(bias), Array.Empty<long>(), Array.Empty<long>(), Array.Empty<long>(), 1);
    }

    /// <summary>
    /// Creates a 1-D, 2-D or 3-D convolution unit (zero padding; the weight's rank decides: [out, in/groups, k…] with
    /// 1, 2 or 3 kernel axes). The tensors are copied.
    /// </summary>
    public static LinearUnit Convolution(Tensor weight, Tensor? bias, long[] stride, long[] padding, long[] dilation, long groups)
    {
        var kind = weight.dim() switch
        {
            3 => LinearUnitKind.Convolution1d,
            4 => LinearUnitKind.Convolution2d,
            5 => LinearUnitKind.Convolution3d,
            _ => throw new ArgumentException($"A convolution weight must have shape [out, in/groups, k…] with 1–3 kernel axes; got [{string.Join(", ", weight.shape)}].", nameof(weight)),
        };
        var axes = (int)weight.dim() - 2;
        long[] Check(long[] v, string name) => v.Length == axes ? (long[])v.Clone()
            : throw new ArgumentException($"A {axes}-D convolution needs {axes} {name} values; got {v.Length}.", name);
        return new LinearUnit(kind, Own(weight), bias is null ? null : Own(bias), Check(stride, nameof(stride)), Check(padding, nameof(padding)), Check(dilation, nameof(dilation)), groups);
    }

    /// <summary>Number of spatial axes of a convolution (0 for dense units).</summary>
    public int SpatialAxes => Kind switch
    {
        LinearUnitKind.Convolution1d => 1,
        LinearUnitKind.Convolution2d => 2,
        LinearUnitKind.Convolution3d => 3,
        _ => 0,
    };

    /// <summary>The expected input shape in words, e.g. <c>[B, 3, H, W]</c> or <c>[B, …, 64]</c>.</summary>
    public string ExpectedInputShape => Kind switch
    {
        LinearUnitKind.Dense => $"[B, …, {InputFeatures}]",
        LinearUnitKind.Convolution1d => $"[B, {InputFeatures}, L]",
        LinearUnitKind.Convolution3d => $"[B, {InputFeatures}, D, H, W]",
        _ => $"[B, {InputFeatures}, H, W]",
    };

    /// <summary>True for convolutions of any dimension.</summary>
    public bool IsConvolution => Kind != LinearUnitKind.Dense;

    /// <summary>A unit with the same geometry and new parameters (copied), e.g. after merging a BatchNorm.</summary>
    public LinearUnit WithParameters(Tensor weight, Tensor? bias) =>
        new(Kind, Own(weight), bias is null ? null : Own(bias), _stride, _padding, _dilation, _groups);

    private static Tensor Own(Tensor t)
    {
        using var _ = torch.no_grad();
        return t.detach().clone().DetachFromDisposeScope();
    }

    /// <summary>Evaluates the layer's linear map on <paramref name="input"/> with the given weight and bias (which may be modified copies).</summary>
    public Tensor Forward(Tensor input, Tensor weight, Tensor? bias)
    {
        // libtorch's matmul terminates the process on a shape error instead of throwing: check first.
        if (Kind == LinearUnitKind.Dense && (input.dim() < 1 || input.shape[^1] != weight.shape[1]))
            throw new ExplanationException($"{this} received an input of shape [{string.Join(", ", input.shape)}]; its last dimension must be {weight.shape[1]}.");
        if (IsConvolution && (input.dim() != SpatialAxes + 2 || input.shape[1] != weight.shape[1] * _groups))
            throw new ExplanationException($"{this} received an input of shape [{string.Join(", ", input.shape)}]; expected {ExpectedInputShape}.");
        return Kind switch
        {
            LinearUnitKind.Dense => F.linear(input, weight, bias),
            LinearUnitKind.Convolution1d => F.conv1d(input, weight, bias, _stride[0], _padding[0], _dilation[0], _groups),
            LinearUnitKind.Convolution3d => F.conv3d(input, weight, bias, _stride, _padding, _dilation, _groups),
            _ => F.conv2d(input, weight, bias, _stride, _padding, _dilation, _groups),
        };
    }

    /// <inheritdoc />
    public Tensor Apply(Tensor input) => Forward(input, Weight, null);

    /// <inheritdoc />
    public Tensor Transpose(Tensor outputGradient, long[] inputShape) => Transpose(outputGradient, Weight, inputShape);

    /// <summary>Evaluates the layer with its own parameters.</summary>
    public Tensor Forward(Tensor input) => Forward(input, Weight, Bias);

    /// <summary>
    /// The transposed map Wᵀ applied to an output-shaped tensor (a vector-Jacobian product with the given weight),
    /// for an input of shape <paramref name="inputShape"/>.
    /// </summary>
    public Tensor Transpose(Tensor outputGrad, Tensor weight, long[] inputShape)
    {
        if (Kind == LinearUnitKind.Dense)
        {
            // libtorch's matmul terminates the process on a shape error instead of throwing: check first.
            if (outputGrad.dim() < 1 || outputGrad.shape[^1] != weight.shape[0])
                throw new ExplanationException($"{this}: cannot apply the transposed map to a tensor of shape [{string.Join(", ", outputGrad.shape)}].");
            return outputGrad.matmul(weight);
        }
        if (IsPatchify(outputGrad, weight, inputShape)) return PatchifyTranspose(outputGrad, weight);
        // output_padding makes conv_transpose return exactly the input size when the stride dropped a border.
        var axes = SpatialAxes;
        var outputPadding = new long[axes];
        for (var a = 0; a < axes; a++)
            outputPadding[a] = inputShape[2 + a] - ((outputGrad.shape[2 + a] - 1) * _stride[a] - 2 * _padding[a] + _dilation[a] * (weight.shape[2 + a] - 1) + 1);
        return Kind switch
        {
            LinearUnitKind.Convolution1d => F.conv_transpose1d(outputGrad, weight, null, _stride[0], _padding[0], outputPadding[0], _groups, _dilation[0]),
            LinearUnitKind.Convolution3d => F.conv_transpose3d(outputGrad, weight, null, _stride, _padding, outputPadding, _dilation, _groups),
            _ => F.conv_transpose2d(outputGrad, weight, null, _stride, _padding, outputPadding, _dilation, _groups),
        };
    }

    /// <summary>
    /// Whether this transpose is that of a patchify convolution (a ViT's patch embedding): 2-D, ungrouped, no padding or
    /// dilation, stride equal to a kernel larger than 1×1, and an input tiled exactly by the patches. Every input pixel
    /// then belongs to exactly one patch, so the transpose is one matrix product per patch (<see cref="PatchifyTranspose"/>).
    /// </summary>
    private bool IsPatchify(Tensor outputGrad, Tensor weight, long[] inputShape)
    {
        if (Kind != LinearUnitKind.Convolution2d || _groups != 1 || outputGrad.dim() != 4 || inputShape.Length != 4) return false;
        if (weight.shape[2] * weight.shape[3] <= 1) return false;
        for (var a = 0; a < 2; a++)
            if (_padding[a] != 0 || _dilation[a] != 1 || _stride[a] != weight.shape[2 + a] || inputShape[2 + a] != outputGrad.shape[2 + a] * _stride[a])
                return false;
        return inputShape[0] == outputGrad.shape[0] && inputShape[1] == weight.shape[1] && outputGrad.shape[1] == weight.shape[0];
    }

    /// <summary>
    /// The transpose of a patchify convolution as one matrix product: <c>g [B, O, h, w]</c> times the weight as
    /// <c>[O, C·kh·kw]</c> gives every patch's pixels, put back in place. The same sums as conv_transpose2d (each pixel
    /// receives one product of length O; no overlapping patches add up), without its column-to-image pass, which on the
    /// CPU costs several times the product (docs/speed.md).
    /// </summary>
    private static Tensor PatchifyTranspose(Tensor outputGrad, Tensor weight)
    {
        long b = outputGrad.shape[0], o = outputGrad.shape[1], h = outputGrad.shape[2], w = outputGrad.shape[3];
        long c = weight.shape[1], kh = weight.shape[2], kw = weight.shape[3];
        var patches = outputGrad.permute(0, 2, 3, 1).reshape(b * h * w, o).matmul(weight.reshape(o, c * kh * kw));
        return patches.view(b, h, w, c, kh, kw).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h * kh, w * kw);
    }

    /// <summary>
    /// Returns a derived parameter (e.g. the positive part of the weight), computed once per unit and cached under
    /// <paramref name="key"/>. The cache is cleared by <see cref="Dispose"/>.
    /// </summary>
    public Tensor GetParameter(string key, Func<Tensor> compute)
    {
        if (_cache.TryGetValue(key, out var t) && !t.IsInvalid) return t;
        using (torch.no_grad())
        {
            t = compute().detach().DetachFromDisposeScope();
        }
        _cache[key] = t;
        return t;
    }

    /// <summary>
    /// The unit restricted to the output features (dense) or channels (convolution) <c>[start, start + length)</c>: the
    /// same geometry with those rows of the weight and bias. Made once per slice and kept (with its own parameter cache)
    /// until <see cref="Dispose"/>; root-seeking rules use it to solve the parts of a packed layer (timm's qkv) on their own.
    /// </summary>
    public LinearUnit OutputSlice(long start, long length)
    {
        if (start < 0 || length < 1 || start + length > OutputFeatures)
            throw new ArgumentOutOfRangeException(nameof(length), $"{this}: output slice [{start}, {start + length}) is outside its {OutputFeatures} outputs.");
        if (_slices.TryGetValue((start, length), out var slice) && !slice.Weight.IsInvalid) return slice;
        using (torch.no_grad())
        {
            slice = WithParameters(Weight.narrow(0, start, length), Bias?.narrow(0, start, length));
        }
        _slices[(start, length)] = slice;
        return slice;
    }

    /// <summary>Human-readable description of the geometry, for error messages and diagnostics.</summary>
    public override string ToString() => Kind == LinearUnitKind.Dense
        ? $"Dense({Weight.shape[1]}→{Weight.shape[0]}{(Bias is null ? ", no bias" : "")})"
        : $"Conv{SpatialAxes}d({InputFeatures}→{OutputFeatures}, kernel {string.Join("×", Weight.shape.Skip(2))}, stride {string.Join("×", _stride)}, padding {string.Join("×", _padding)}{(Bias is null ? ", no bias" : "")})";

    /// <summary>Releases the unit's parameter copies and cached derived parameters.</summary>
    public void Dispose()
    {
        foreach (var t in _cache.Values) t.Dispose();
        _cache.Clear();
        foreach (var s in _slices.Values) s.Dispose();
        _slices.Clear();
        Weight.Dispose();
        Bias?.Dispose();
    }
}
