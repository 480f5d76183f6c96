using RootDtd.Canonizers;
using RootDtd.Composites;
using RootDtd.Graph;

namespace RootDtd.Rules.RootInference.Published;

/// <summary>
/// The behaviour of the published root-inference code (<c>meetxinzhang/XAI-RootInference</c>, <c>DTDOpt</c> in
/// <c>modules/layers_cnn.py</c> with the solvers of <c>modules/root_infer.py</c>) as a RootDtd composite, so that it can be
/// measured next to the spec rule (<c>RootInferenceRule</c>). See <c>docs/root-inference-published.md</c>.
/// </summary>
/// <example>
/// <code>
/// var (composite, options) = PublishedRootPreset.Create();
/// using var explainer = new Explainer(model, composite, options);
/// using var e = explainer.Explain(images);
/// </code>
/// </example>
public static class PublishedRootPreset
{
    /// <summary>The method name in <see cref="MethodCatalog"/>.</summary>
    public const string Name = "root-published";

    /// <summary>
    /// The composite: start from <c>|logit_target|</c>; first convolution <see cref="PublishedConvRootRule"/> from an
    /// all-ones input; other convolutions <see cref="PublishedConvRootRule"/>; dense layers
    /// <see cref="PublishedDenseRootRule"/>; ReLUs <see cref="PublishedReluRule"/> except inside residual blocks, where
    /// they pass (<see cref="PublishedGraph.IsInsideResidualBlock"/>); max pooling <see cref="PublishedMaxPoolRule"/>;
    /// average pooling <see cref="PublishedAvgPoolRule"/>; residual sums <see cref="PublishedSkipRule"/>; BatchNorm,
    /// dropout, flatten and identity pass (the node-kind rules are the model bundles' <see cref="BundleVariant.PublishedRootInference"/>).
    /// No canonizer: BatchNorm layers stay in the graph (see <see cref="Options"/>).
    /// </summary>
    public static Composite Composite() =>
        new Composite(Name) { StartRelevance = StartRelevance.AbsoluteTargetLogit, Variant = BundleVariant.PublishedRootInference }
            .ForFirstUnit(new PublishedConvRootRule(startFromOnes: true), convolutionOnly: true)
            .ForConvolutions(new PublishedConvRootRule())
            .ForDense(new PublishedDenseRootRule())
            .ForNodes(PublishedGraph.IsInsideResidualBlock, PassRule.Instance);

    /// <summary>
    /// Explainer options matching the reference: no canonizer, so BatchNorm layers stay in the graph and pass relevance.
    /// (The published rules read each layer's own weight, so their result is the same with BatchNorm merging; leaving the
    /// BatchNorms in the graph makes the layer relevances match the reference's layer by layer.)
    /// </summary>
    public static ExplainerOptions Options() => new() { Canonizers = Array.Empty<ICanonizer>() };

    /// <summary>The composite and the options it is meant to run with.</summary>
    public static (Composite Composite, ExplainerOptions Options) Create() => (Composite(), Options());
}
