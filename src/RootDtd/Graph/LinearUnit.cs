using TorchSharp;
using static TorchSharp.torch;
using F = TorchSharp.torch.nn.functional;

namespace RootDtd.Graph;

/// <summary>The kind of linear map a <see cref="LinearUnit"/> computes.</summary>
public enum LinearUnitKind
{
    /// <summary>A dense layer: <c>y = x·Wᵀ + b</c> on inputs of shape [B, F].</summary>
    Dense,

    /// <summary>A 2-D convolution on inputs of shape [B, C, H, W].</summary>
    Convolution2d,
}

/// <summary>
/// A conv/linear layer of the relevance graph with its effective parameters (after canonizers such as BatchNorm
/// merging). Rules evaluate the layer with modified inputs and parameters through <see cref="Forward(Tensor, Tensor, Tensor?)"/>; modified
/// parameters are cached per unit (<see cref="GetParameter"/>) so that repeated explanations do not recompute them.
/// </summary>
public sealed class LinearUnit : IDisposable
{
    private readonly Dictionary<string, Tensor> _cache = new();
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

    /// <summary>Dense or convolution.</summary>
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

    /// <summary>Creates a 2-D convolution unit (zero padding). The tensors are copied.</summary>
    public static LinearUnit Convolution(Tensor weight, Tensor? bias, long[] stride, long[] padding, long[] dilation, long groups)
    {
        if (weight.dim() != 4) throw new ArgumentException($"A conv2d weight must have shape [out, in/groups, kh, kw]; got [{string.Join(", ", weight.shape)}].", nameof(weight));
        return new LinearUnit(LinearUnitKind.Convolution2d, Own(weight), bias is null ? null : Own(bias), (long[])stride.Clone(), (long[])padding.Clone(), (long[])dilation.Clone(), groups);
    }

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
        if (Kind == LinearUnitKind.Convolution2d && (input.dim() != 4 || input.shape[1] != weight.shape[1] * _groups))
            throw new ExplanationException($"{this} received an input of shape [{string.Join(", ", input.shape)}]; expected [B, {weight.shape[1] * _groups}, H, W].");
        return Kind == LinearUnitKind.Dense
            ? F.linear(input, weight, bias)
            : F.conv2d(input, weight, bias, _stride, _padding, _dilation, _groups);
    }

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
        var h = inputShape[2];
        var w = inputShape[3];
        var outH = outputGrad.shape[2];
        var outW = outputGrad.shape[3];
        // output_padding makes conv_transpose return exactly the input size when the stride dropped a border.
        var kh = weight.shape[2];
        var kw = weight.shape[3];
        var ph = h - ((outH - 1) * _stride[0] - 2 * _padding[0] + _dilation[0] * (kh - 1) + 1);
        var pw = w - ((outW - 1) * _stride[1] - 2 * _padding[1] + _dilation[1] * (kw - 1) + 1);
        return F.conv_transpose2d(outputGrad, weight, null, _stride, _padding, new[] { ph, pw }, _dilation, _groups);
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

    /// <summary>Human-readable description of the geometry, for error messages and diagnostics.</summary>
    public override string ToString() => Kind == LinearUnitKind.Dense
        ? $"Dense({Weight.shape[1]}→{Weight.shape[0]}{(Bias is null ? ", no bias" : "")})"
        : $"Conv2d({InputFeatures}→{OutputFeatures}, kernel {Weight.shape[2]}×{Weight.shape[3]}, stride {string.Join("×", _stride)}, padding {string.Join("×", _padding)}{(Bias is null ? ", no bias" : "")})";

    /// <summary>Releases the unit's parameter copies and cached derived parameters.</summary>
    public void Dispose()
    {
        foreach (var t in _cache.Values) t.Dispose();
        _cache.Clear();
        Weight.Dispose();
        Bias?.Dispose();
    }
}
