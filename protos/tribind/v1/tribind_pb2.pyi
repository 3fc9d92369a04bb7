from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Modality(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODALITY_UNSPECIFIED: _ClassVar[Modality]
    MODALITY_XRAY: _ClassVar[Modality]
    MODALITY_ECG: _ClassVar[Modality]
    MODALITY_TEXT: _ClassVar[Modality]
MODALITY_UNSPECIFIED: Modality
MODALITY_XRAY: Modality
MODALITY_ECG: Modality
MODALITY_TEXT: Modality

class XRayImage(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class EcgSignal(_message.Message):
    __slots__ = ("samples", "n_leads", "n_samples", "lead_names", "sampling_rate_hz")
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    N_LEADS_FIELD_NUMBER: _ClassVar[int]
    N_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    LEAD_NAMES_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    samples: _containers.RepeatedScalarFieldContainer[float]
    n_leads: int
    n_samples: int
    lead_names: _containers.RepeatedScalarFieldContainer[str]
    sampling_rate_hz: float
    def __init__(self, samples: _Optional[_Iterable[float]] = ..., n_leads: _Optional[int] = ..., n_samples: _Optional[int] = ..., lead_names: _Optional[_Iterable[str]] = ..., sampling_rate_hz: _Optional[float] = ...) -> None: ...

class WfdbRecord(_message.Message):
    __slots__ = ("header", "signal", "signal_files")
    class SignalFilesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bytes
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bytes] = ...) -> None: ...
    HEADER_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_FILES_FIELD_NUMBER: _ClassVar[int]
    header: bytes
    signal: bytes
    signal_files: _containers.ScalarMap[str, bytes]
    def __init__(self, header: _Optional[bytes] = ..., signal: _Optional[bytes] = ..., signal_files: _Optional[_Mapping[str, bytes]] = ...) -> None: ...

class Ecg(_message.Message):
    __slots__ = ("signal", "wfdb")
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    WFDB_FIELD_NUMBER: _ClassVar[int]
    signal: EcgSignal
    wfdb: WfdbRecord
    def __init__(self, signal: _Optional[_Union[EcgSignal, _Mapping]] = ..., wfdb: _Optional[_Union[WfdbRecord, _Mapping]] = ...) -> None: ...

class Item(_message.Message):
    __slots__ = ("xray", "ecg", "text")
    XRAY_FIELD_NUMBER: _ClassVar[int]
    ECG_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    xray: XRayImage
    ecg: Ecg
    text: str
    def __init__(self, xray: _Optional[_Union[XRayImage, _Mapping]] = ..., ecg: _Optional[_Union[Ecg, _Mapping]] = ..., text: _Optional[str] = ...) -> None: ...

class Vector(_message.Message):
    __slots__ = ("modality", "values", "model_version")
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    modality: Modality
    values: _containers.RepeatedScalarFieldContainer[float]
    model_version: str
    def __init__(self, modality: _Optional[_Union[Modality, str]] = ..., values: _Optional[_Iterable[float]] = ..., model_version: _Optional[str] = ...) -> None: ...

class TextSpan(_message.Message):
    __slots__ = ("start", "end")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    start: int
    end: int
    def __init__(self, start: _Optional[int] = ..., end: _Optional[int] = ...) -> None: ...

class Relevance(_message.Message):
    __slots__ = ("modality", "method", "score", "target", "item", "values", "shape", "time_values", "window_s", "time_offset_s", "lead_names", "words", "spans", "truncated", "token_origin_px", "token_stride_px")
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    ITEM_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    TIME_VALUES_FIELD_NUMBER: _ClassVar[int]
    WINDOW_S_FIELD_NUMBER: _ClassVar[int]
    TIME_OFFSET_S_FIELD_NUMBER: _ClassVar[int]
    LEAD_NAMES_FIELD_NUMBER: _ClassVar[int]
    WORDS_FIELD_NUMBER: _ClassVar[int]
    SPANS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    TOKEN_ORIGIN_PX_FIELD_NUMBER: _ClassVar[int]
    TOKEN_STRIDE_PX_FIELD_NUMBER: _ClassVar[int]
    modality: Modality
    method: str
    score: float
    target: str
    item: str
    values: _containers.RepeatedScalarFieldContainer[float]
    shape: _containers.RepeatedScalarFieldContainer[int]
    time_values: _containers.RepeatedScalarFieldContainer[float]
    window_s: float
    time_offset_s: float
    lead_names: _containers.RepeatedScalarFieldContainer[str]
    words: _containers.RepeatedScalarFieldContainer[str]
    spans: _containers.RepeatedCompositeFieldContainer[TextSpan]
    truncated: bool
    token_origin_px: float
    token_stride_px: float
    def __init__(self, modality: _Optional[_Union[Modality, str]] = ..., method: _Optional[str] = ..., score: _Optional[float] = ..., target: _Optional[str] = ..., item: _Optional[str] = ..., values: _Optional[_Iterable[float]] = ..., shape: _Optional[_Iterable[int]] = ..., time_values: _Optional[_Iterable[float]] = ..., window_s: _Optional[float] = ..., time_offset_s: _Optional[float] = ..., lead_names: _Optional[_Iterable[str]] = ..., words: _Optional[_Iterable[str]] = ..., spans: _Optional[_Iterable[_Union[TextSpan, _Mapping]]] = ..., truncated: _Optional[bool] = ..., token_origin_px: _Optional[float] = ..., token_stride_px: _Optional[float] = ...) -> None: ...

class CaseEvidence(_message.Message):
    __slots__ = ("case_id", "score", "relevance", "labels", "png")
    CASE_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    RELEVANCE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    PNG_FIELD_NUMBER: _ClassVar[int]
    case_id: str
    score: float
    relevance: Relevance
    labels: _containers.RepeatedScalarFieldContainer[str]
    png: bytes
    def __init__(self, case_id: _Optional[str] = ..., score: _Optional[float] = ..., relevance: _Optional[_Union[Relevance, _Mapping]] = ..., labels: _Optional[_Iterable[str]] = ..., png: _Optional[bytes] = ...) -> None: ...

class Explanation(_message.Message):
    __slots__ = ("score", "subject", "other", "evidence", "png", "note")
    SCORE_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    OTHER_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    PNG_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    score: float
    subject: Relevance
    other: Relevance
    evidence: _containers.RepeatedCompositeFieldContainer[CaseEvidence]
    png: bytes
    note: str
    def __init__(self, score: _Optional[float] = ..., subject: _Optional[_Union[Relevance, _Mapping]] = ..., other: _Optional[_Union[Relevance, _Mapping]] = ..., evidence: _Optional[_Iterable[_Union[CaseEvidence, _Mapping]]] = ..., png: _Optional[bytes] = ..., note: _Optional[str] = ...) -> None: ...

class ExplainTarget(_message.Message):
    __slots__ = ("label", "text", "item", "case_ref", "label_set", "contrast")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    ITEM_FIELD_NUMBER: _ClassVar[int]
    CASE_REF_FIELD_NUMBER: _ClassVar[int]
    LABEL_SET_FIELD_NUMBER: _ClassVar[int]
    CONTRAST_FIELD_NUMBER: _ClassVar[int]
    label: str
    text: str
    item: Item
    case_ref: CaseRef
    label_set: str
    contrast: bool
    def __init__(self, label: _Optional[str] = ..., text: _Optional[str] = ..., item: _Optional[_Union[Item, _Mapping]] = ..., case_ref: _Optional[_Union[CaseRef, _Mapping]] = ..., label_set: _Optional[str] = ..., contrast: _Optional[bool] = ...) -> None: ...

class ExplainOptions(_message.Message):
    __slots__ = ("method", "include_png", "evidence_k")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_PNG_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_K_FIELD_NUMBER: _ClassVar[int]
    method: str
    include_png: bool
    evidence_k: int
    def __init__(self, method: _Optional[str] = ..., include_png: _Optional[bool] = ..., evidence_k: _Optional[int] = ...) -> None: ...

class ExplainRequest(_message.Message):
    __slots__ = ("item", "case_ref", "target", "options")
    ITEM_FIELD_NUMBER: _ClassVar[int]
    CASE_REF_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    item: Item
    case_ref: CaseRef
    target: ExplainTarget
    options: ExplainOptions
    def __init__(self, item: _Optional[_Union[Item, _Mapping]] = ..., case_ref: _Optional[_Union[CaseRef, _Mapping]] = ..., target: _Optional[_Union[ExplainTarget, _Mapping]] = ..., options: _Optional[_Union[ExplainOptions, _Mapping]] = ...) -> None: ...

class ExplainResponse(_message.Message):
    __slots__ = ("explanation", "model_version")
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    explanation: Explanation
    model_version: str
    def __init__(self, explanation: _Optional[_Union[Explanation, _Mapping]] = ..., model_version: _Optional[str] = ...) -> None: ...

class EmbedRequest(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[Item]
    def __init__(self, items: _Optional[_Iterable[_Union[Item, _Mapping]]] = ...) -> None: ...

class EmbedResponse(_message.Message):
    __slots__ = ("embeddings", "model_version", "dim")
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    embeddings: _containers.RepeatedCompositeFieldContainer[Vector]
    model_version: str
    dim: int
    def __init__(self, embeddings: _Optional[_Iterable[_Union[Vector, _Mapping]]] = ..., model_version: _Optional[str] = ..., dim: _Optional[int] = ...) -> None: ...

class Case(_message.Message):
    __slots__ = ("case_id", "patient_id", "study_time", "labels", "metadata", "xray", "ecg", "report", "vectors", "modalities", "model_version")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CASE_ID_FIELD_NUMBER: _ClassVar[int]
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    STUDY_TIME_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    XRAY_FIELD_NUMBER: _ClassVar[int]
    ECG_FIELD_NUMBER: _ClassVar[int]
    REPORT_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    MODALITIES_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    case_id: str
    patient_id: str
    study_time: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    metadata: _containers.ScalarMap[str, str]
    xray: XRayImage
    ecg: Ecg
    report: str
    vectors: _containers.RepeatedCompositeFieldContainer[Vector]
    modalities: _containers.RepeatedScalarFieldContainer[Modality]
    model_version: str
    def __init__(self, case_id: _Optional[str] = ..., patient_id: _Optional[str] = ..., study_time: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., xray: _Optional[_Union[XRayImage, _Mapping]] = ..., ecg: _Optional[_Union[Ecg, _Mapping]] = ..., report: _Optional[str] = ..., vectors: _Optional[_Iterable[_Union[Vector, _Mapping]]] = ..., modalities: _Optional[_Iterable[_Union[Modality, str]]] = ..., model_version: _Optional[str] = ...) -> None: ...

class UpsertRequest(_message.Message):
    __slots__ = ("cases",)
    CASES_FIELD_NUMBER: _ClassVar[int]
    cases: _containers.RepeatedCompositeFieldContainer[Case]
    def __init__(self, cases: _Optional[_Iterable[_Union[Case, _Mapping]]] = ...) -> None: ...

class UpsertResponse(_message.Message):
    __slots__ = ("case_ids", "vectors_written", "model_version")
    CASE_IDS_FIELD_NUMBER: _ClassVar[int]
    VECTORS_WRITTEN_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    case_ids: _containers.RepeatedScalarFieldContainer[str]
    vectors_written: int
    model_version: str
    def __init__(self, case_ids: _Optional[_Iterable[str]] = ..., vectors_written: _Optional[int] = ..., model_version: _Optional[str] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("case_ids", "ignore_missing")
    CASE_IDS_FIELD_NUMBER: _ClassVar[int]
    IGNORE_MISSING_FIELD_NUMBER: _ClassVar[int]
    case_ids: _containers.RepeatedScalarFieldContainer[str]
    ignore_missing: bool
    def __init__(self, case_ids: _Optional[_Iterable[str]] = ..., ignore_missing: _Optional[bool] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    def __init__(self, deleted: _Optional[int] = ...) -> None: ...

class GetCaseRequest(_message.Message):
    __slots__ = ("case_id", "include_media", "include_vectors")
    CASE_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_MEDIA_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_VECTORS_FIELD_NUMBER: _ClassVar[int]
    case_id: str
    include_media: bool
    include_vectors: bool
    def __init__(self, case_id: _Optional[str] = ..., include_media: _Optional[bool] = ..., include_vectors: _Optional[bool] = ...) -> None: ...

class CaseRef(_message.Message):
    __slots__ = ("case_id", "modality")
    CASE_ID_FIELD_NUMBER: _ClassVar[int]
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    case_id: str
    modality: Modality
    def __init__(self, case_id: _Optional[str] = ..., modality: _Optional[_Union[Modality, str]] = ...) -> None: ...

class Filter(_message.Message):
    __slots__ = ("labels_any", "labels_all", "labels_none", "patient_in", "patient_not_in", "metadata_equals", "time_from", "time_to")
    class MetadataEqualsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    LABELS_ANY_FIELD_NUMBER: _ClassVar[int]
    LABELS_ALL_FIELD_NUMBER: _ClassVar[int]
    LABELS_NONE_FIELD_NUMBER: _ClassVar[int]
    PATIENT_IN_FIELD_NUMBER: _ClassVar[int]
    PATIENT_NOT_IN_FIELD_NUMBER: _ClassVar[int]
    METADATA_EQUALS_FIELD_NUMBER: _ClassVar[int]
    TIME_FROM_FIELD_NUMBER: _ClassVar[int]
    TIME_TO_FIELD_NUMBER: _ClassVar[int]
    labels_any: _containers.RepeatedScalarFieldContainer[str]
    labels_all: _containers.RepeatedScalarFieldContainer[str]
    labels_none: _containers.RepeatedScalarFieldContainer[str]
    patient_in: _containers.RepeatedScalarFieldContainer[str]
    patient_not_in: _containers.RepeatedScalarFieldContainer[str]
    metadata_equals: _containers.ScalarMap[str, str]
    time_from: str
    time_to: str
    def __init__(self, labels_any: _Optional[_Iterable[str]] = ..., labels_all: _Optional[_Iterable[str]] = ..., labels_none: _Optional[_Iterable[str]] = ..., patient_in: _Optional[_Iterable[str]] = ..., patient_not_in: _Optional[_Iterable[str]] = ..., metadata_equals: _Optional[_Mapping[str, str]] = ..., time_from: _Optional[str] = ..., time_to: _Optional[str] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("item", "case_ref", "vector", "targets", "k", "offset", "score_threshold", "filter", "exclude_query_case", "exclude_query_patient", "group_by_patient", "explain", "explain_options")
    ITEM_FIELD_NUMBER: _ClassVar[int]
    CASE_REF_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    SCORE_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_QUERY_CASE_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_QUERY_PATIENT_FIELD_NUMBER: _ClassVar[int]
    GROUP_BY_PATIENT_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    item: Item
    case_ref: CaseRef
    vector: Vector
    targets: _containers.RepeatedScalarFieldContainer[Modality]
    k: int
    offset: int
    score_threshold: float
    filter: Filter
    exclude_query_case: bool
    exclude_query_patient: bool
    group_by_patient: bool
    explain: bool
    explain_options: ExplainOptions
    def __init__(self, item: _Optional[_Union[Item, _Mapping]] = ..., case_ref: _Optional[_Union[CaseRef, _Mapping]] = ..., vector: _Optional[_Union[Vector, _Mapping]] = ..., targets: _Optional[_Iterable[_Union[Modality, str]]] = ..., k: _Optional[int] = ..., offset: _Optional[int] = ..., score_threshold: _Optional[float] = ..., filter: _Optional[_Union[Filter, _Mapping]] = ..., exclude_query_case: _Optional[bool] = ..., exclude_query_patient: _Optional[bool] = ..., group_by_patient: _Optional[bool] = ..., explain: _Optional[bool] = ..., explain_options: _Optional[_Union[ExplainOptions, _Mapping]] = ...) -> None: ...

class Hit(_message.Message):
    __slots__ = ("case_id", "modality", "score", "labels", "metadata", "patient_id", "study_time", "explanation")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CASE_ID_FIELD_NUMBER: _ClassVar[int]
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    STUDY_TIME_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    case_id: str
    modality: Modality
    score: float
    labels: _containers.RepeatedScalarFieldContainer[str]
    metadata: _containers.ScalarMap[str, str]
    patient_id: str
    study_time: str
    explanation: Explanation
    def __init__(self, case_id: _Optional[str] = ..., modality: _Optional[_Union[Modality, str]] = ..., score: _Optional[float] = ..., labels: _Optional[_Iterable[str]] = ..., metadata: _Optional[_Mapping[str, str]] = ..., patient_id: _Optional[str] = ..., study_time: _Optional[str] = ..., explanation: _Optional[_Union[Explanation, _Mapping]] = ...) -> None: ...

class PatientGroup(_message.Message):
    __slots__ = ("patient_id", "best_score", "hits")
    PATIENT_ID_FIELD_NUMBER: _ClassVar[int]
    BEST_SCORE_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    patient_id: str
    best_score: float
    hits: _containers.RepeatedCompositeFieldContainer[Hit]
    def __init__(self, patient_id: _Optional[str] = ..., best_score: _Optional[float] = ..., hits: _Optional[_Iterable[_Union[Hit, _Mapping]]] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("hits", "groups", "model_version")
    HITS_FIELD_NUMBER: _ClassVar[int]
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[Hit]
    groups: _containers.RepeatedCompositeFieldContainer[PatientGroup]
    model_version: str
    def __init__(self, hits: _Optional[_Iterable[_Union[Hit, _Mapping]]] = ..., groups: _Optional[_Iterable[_Union[PatientGroup, _Mapping]]] = ..., model_version: _Optional[str] = ...) -> None: ...

class CustomLabel(_message.Message):
    __slots__ = ("name", "prompts", "negative_prompts")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    NEGATIVE_PROMPTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    prompts: _containers.RepeatedScalarFieldContainer[str]
    negative_prompts: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., prompts: _Optional[_Iterable[str]] = ..., negative_prompts: _Optional[_Iterable[str]] = ...) -> None: ...

class CustomLabels(_message.Message):
    __slots__ = ("labels",)
    LABELS_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedCompositeFieldContainer[CustomLabel]
    def __init__(self, labels: _Optional[_Iterable[_Union[CustomLabel, _Mapping]]] = ...) -> None: ...

class ClassifyRequest(_message.Message):
    __slots__ = ("item", "case_ref", "label_set", "custom", "top_k", "explain", "explain_options")
    ITEM_FIELD_NUMBER: _ClassVar[int]
    CASE_REF_FIELD_NUMBER: _ClassVar[int]
    LABEL_SET_FIELD_NUMBER: _ClassVar[int]
    CUSTOM_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_FIELD_NUMBER: _ClassVar[int]
    EXPLAIN_OPTIONS_FIELD_NUMBER: _ClassVar[int]
    item: Item
    case_ref: CaseRef
    label_set: str
    custom: CustomLabels
    top_k: int
    explain: bool
    explain_options: ExplainOptions
    def __init__(self, item: _Optional[_Union[Item, _Mapping]] = ..., case_ref: _Optional[_Union[CaseRef, _Mapping]] = ..., label_set: _Optional[str] = ..., custom: _Optional[_Union[CustomLabels, _Mapping]] = ..., top_k: _Optional[int] = ..., explain: _Optional[bool] = ..., explain_options: _Optional[_Union[ExplainOptions, _Mapping]] = ...) -> None: ...

class LabelScore(_message.Message):
    __slots__ = ("label", "score", "probability", "explanation")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    label: str
    score: float
    probability: float
    explanation: Explanation
    def __init__(self, label: _Optional[str] = ..., score: _Optional[float] = ..., probability: _Optional[float] = ..., explanation: _Optional[_Union[Explanation, _Mapping]] = ...) -> None: ...

class ClassifyResponse(_message.Message):
    __slots__ = ("labels", "label_set", "modality", "model_version")
    LABELS_FIELD_NUMBER: _ClassVar[int]
    LABEL_SET_FIELD_NUMBER: _ClassVar[int]
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    labels: _containers.RepeatedCompositeFieldContainer[LabelScore]
    label_set: str
    modality: Modality
    model_version: str
    def __init__(self, labels: _Optional[_Iterable[_Union[LabelScore, _Mapping]]] = ..., label_set: _Optional[str] = ..., modality: _Optional[_Union[Modality, str]] = ..., model_version: _Optional[str] = ...) -> None: ...

class ListLabelSetsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LabelSet(_message.Message):
    __slots__ = ("name", "description", "labels", "modalities")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    MODALITIES_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    labels: _containers.RepeatedScalarFieldContainer[str]
    modalities: _containers.RepeatedScalarFieldContainer[Modality]
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., labels: _Optional[_Iterable[str]] = ..., modalities: _Optional[_Iterable[_Union[Modality, str]]] = ...) -> None: ...

class ListLabelSetsResponse(_message.Message):
    __slots__ = ("label_sets",)
    LABEL_SETS_FIELD_NUMBER: _ClassVar[int]
    label_sets: _containers.RepeatedCompositeFieldContainer[LabelSet]
    def __init__(self, label_sets: _Optional[_Iterable[_Union[LabelSet, _Mapping]]] = ...) -> None: ...

class StatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ModalityCount(_message.Message):
    __slots__ = ("modality", "vectors")
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    VECTORS_FIELD_NUMBER: _ClassVar[int]
    modality: Modality
    vectors: int
    def __init__(self, modality: _Optional[_Union[Modality, str]] = ..., vectors: _Optional[int] = ...) -> None: ...

class StatsResponse(_message.Message):
    __slots__ = ("cases", "patients", "modalities", "index_kind", "model_version", "data_dir", "dim")
    CASES_FIELD_NUMBER: _ClassVar[int]
    PATIENTS_FIELD_NUMBER: _ClassVar[int]
    MODALITIES_FIELD_NUMBER: _ClassVar[int]
    INDEX_KIND_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    DATA_DIR_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    cases: int
    patients: int
    modalities: _containers.RepeatedCompositeFieldContainer[ModalityCount]
    index_kind: str
    model_version: str
    data_dir: str
    dim: int
    def __init__(self, cases: _Optional[int] = ..., patients: _Optional[int] = ..., modalities: _Optional[_Iterable[_Union[ModalityCount, _Mapping]]] = ..., index_kind: _Optional[str] = ..., model_version: _Optional[str] = ..., data_dir: _Optional[str] = ..., dim: _Optional[int] = ...) -> None: ...

class ReindexRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ReindexProgress(_message.Message):
    __slots__ = ("done", "total", "skipped", "finished", "model_version")
    DONE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    done: int
    total: int
    skipped: int
    finished: bool
    model_version: str
    def __init__(self, done: _Optional[int] = ..., total: _Optional[int] = ..., skipped: _Optional[int] = ..., finished: _Optional[bool] = ..., model_version: _Optional[str] = ...) -> None: ...
