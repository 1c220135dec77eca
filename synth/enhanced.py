"""Encode a synthetic CT volume as one Enhanced CT Image (multi-frame, functional groups) the way modern scanners do.

One Part 10 file of SOP class Enhanced CT Image Storage (1.2.840.10008.5.1.4.1.1.2.1) holds every slice of a
(z, y, x) HU volume as a frame. Unlike a series of CT Image Storage files, the geometry and the modality LUT live
only in the functional groups:

- SharedFunctionalGroupsSequence: PixelMeasuresSequence (PixelSpacing [dy, dx], SliceThickness and
  SpacingBetweenSlices dz, mm), PlaneOrientationSequence (ImageOrientationPatient), PixelValueTransformationSequence
  (RescaleIntercept, RescaleSlope, RescaleType HU; per frame instead with ``per_frame_rescale``),
  CTImageFrameTypeSequence (FrameType ORIGINAL\\PRIMARY\\AXIAL\\NONE), FrameVOILUTSequence, FrameAnatomySequence,
  CTAcquisitionTypeSequence and IrradiationEventIdentificationSequence;
- PerFrameFunctionalGroupsSequence, one item per frame: PlanePositionSequence (ImagePositionPatient of the slice,
  mm, LPS), FrameContentSequence (StackID "1", InStackPositionNumber = slice index + 1, DimensionIndexValues
  [1, InStackPositionNumber], acquisition date and time) and, with ``per_frame_rescale``,
  PixelValueTransformationSequence.

There is no top-level ImagePositionPatient, ImageOrientationPatient, PixelSpacing, SliceThickness,
RescaleIntercept or RescaleSlope. The dimension organisation is (Stack ID, In-Stack Position Number) of the Frame
Content Sequence. ``frame_order`` stores the slices in any order (frame f holds slice ``frame_order[f]``), so that
readers must sort frames by position, never by frame number.

Pixel storage and transfer syntax follow :class:`synth.dicom.EncodeOptions`: native pixel data holds the frames one
after another; compressed pixel data has one fragment per frame, with or without a Basic Offset Table. Enhanced CT
requires BitsAllocated 16, so 8-bit storage (and with it JPEG Baseline) is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import Tag
from pydicom.uid import generate_uid

from synth.dicom import (
    WINDOW_CENTER_HU,
    WINDOW_WIDTH_HU,
    EncodeOptions,
    SeriesGeometry,
    SeriesHeader,
    add_image_pixel_elements,
    add_lossy_elements,
    add_study_elements,
    checked_volume,
    dataset_to_bytes,
    ds_number,
    encode_pixel_data,
    part10_file_meta,
)

ENHANCED_CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2.1"
# With per_frame_rescale, odd frames use an intercept this many stored units higher (-1000 for the default -1024).
PER_FRAME_INTERCEPT_STEP = 24
IMAGE_TYPE = ("ORIGINAL", "PRIMARY", "AXIAL", "NONE")
STACK_ID = "1"

_FRAME_CONTENT_SEQUENCE = Tag(0x0020, 0x9111)
_STACK_ID = Tag(0x0020, 0x9056)
_IN_STACK_POSITION_NUMBER = Tag(0x0020, 0x9057)


def enhanced_ct(
    hu: np.ndarray,
    header: SeriesHeader,
    geometry: SeriesGeometry,
    *,
    options: EncodeOptions | None = None,
    per_frame_rescale: bool = False,
    frame_order: Sequence[int] | None = None,
    sop_instance_uid: str | None = None,
    basic_offset_table: bool = True,
) -> bytes:
    """One Enhanced CT Image Storage Part 10 file holding every slice of ``hu`` ((z, y, x), HU) as a frame.

    ``geometry`` places voxel (k, i, j) in patient space (mm); frame f holds slice ``frame_order[f]`` (default: slice
    order), whose PlanePositionSequence is ``geometry.slice_position_mm(frame_order[f])``. ``options`` choose pixel
    storage, modality LUT and transfer syntax (8-bit storage is refused: Enhanced CT allocates 16 bits). With
    ``per_frame_rescale`` each frame has its own PixelValueTransformationSequence: even frames use the options'
    intercept, odd frames one :data:`PER_FRAME_INTERCEPT_STEP` stored units higher, with the stored values shifted
    so that the HU are the same (the options' storage must cover the CT range with both intercepts).
    ``basic_offset_table`` fills the Basic Offset Table of compressed pixel data (else it is left empty).
    ``sop_instance_uid`` defaults to a new random UID. See the module docstring for the attributes written.
    """
    ds = enhanced_ct_dataset(
        hu,
        header,
        geometry,
        options=options,
        per_frame_rescale=per_frame_rescale,
        frame_order=frame_order,
        sop_instance_uid=sop_instance_uid,
        basic_offset_table=basic_offset_table,
    )
    return dataset_to_bytes(ds)


def enhanced_ct_dataset(
    hu: np.ndarray,
    header: SeriesHeader,
    geometry: SeriesGeometry,
    *,
    options: EncodeOptions | None = None,
    per_frame_rescale: bool = False,
    frame_order: Sequence[int] | None = None,
    sop_instance_uid: str | None = None,
    basic_offset_table: bool = True,
) -> Dataset:
    """The dataset (with its file meta) that :func:`enhanced_ct` encodes; same arguments."""
    hu = checked_volume(hu)
    options = options or EncodeOptions()
    storage = options.pixel_representation
    if storage.bits_allocated != 16:
        raise ValueError(
            f"Enhanced CT requires BitsAllocated 16, got pixel_representation {storage.value!r} "
            f"({storage.bits_allocated} bits allocated; transfer_syntax {options.transfer_syntax.value!r})"
        )
    n_frames, rows, columns = (int(n) for n in hu.shape)
    order = _frame_order(n_frames, frame_order)
    frame_options = frame_encode_options(options, n_frames, per_frame_rescale=per_frame_rescale)
    sop_uid = sop_instance_uid or generate_uid()
    organization_uid = generate_uid(entropy_srcs=[sop_uid, "dimension-organization"])

    ds = Dataset()
    add_study_elements(ds, header, modality="CT", sop_class=ENHANCED_CT_IMAGE_STORAGE)
    ds.SOPInstanceUID = sop_uid
    ds.ImageType = list(IMAGE_TYPE)
    acquired = f"{header.study_date}{header.study_time}"
    ds.AcquisitionDateTime = acquired
    ds.ManufacturerModelName = "synthetic"
    ds.DeviceSerialNumber = "0"
    ds.SoftwareVersions = "nightscan-synth"
    ds.BodyPartExamined = "CHEST"
    ds.PatientPosition = "FFS"
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = 1
    ds.FrameOfReferenceUID = header.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.ContentQualification = "PRODUCT"
    ds.BurnedInAnnotation = "NO"
    ds.RecognizableVisualFeatures = "NO"
    ds.PresentationLUTShape = "IDENTITY"
    ds.AcquisitionContextSequence = DicomSequence()
    add_image_pixel_elements(ds, options, rows=rows, columns=columns)
    ds.NumberOfFrames = n_frames
    _add_frame_type(ds)
    ds.DimensionOrganizationSequence = DicomSequence([_item(DimensionOrganizationUID=organization_uid)])
    ds.DimensionIndexSequence = DicomSequence(
        [
            _dimension(_STACK_ID, "Stack ID", organization_uid),
            _dimension(_IN_STACK_POSITION_NUMBER, "In-Stack Position Number", organization_uid),
        ]
    )
    ds.SharedFunctionalGroupsSequence = DicomSequence(
        [_shared_groups(geometry, None if per_frame_rescale else options, sop_uid)]
    )
    ds.PerFrameFunctionalGroupsSequence = DicomSequence(
        [
            _frame_groups(geometry, order[f], frame_options[f] if per_frame_rescale else None, acquired)
            for f in range(n_frames)
        ]
    )
    frames = [frame_options[f].stored_from_hu(hu[order[f]]) for f in range(n_frames)]
    pixels = encode_pixel_data(frames, options, basic_offset_table=basic_offset_table)
    ds.add(pixels.element)
    if options.transfer_syntax.is_lossy:
        add_lossy_elements(ds, options.transfer_syntax, pixels.compression_ratio)
    else:
        ds.LossyImageCompression = "00"
    ds.file_meta = part10_file_meta(ENHANCED_CT_IMAGE_STORAGE, sop_uid, options.transfer_syntax)
    return ds


def frame_encode_options(options: EncodeOptions, n_frames: int, *, per_frame_rescale: bool) -> list[EncodeOptions]:
    """The options (modality LUT) of each frame: ``options`` for every frame, or with ``per_frame_rescale`` the
    options' intercept for even frames and one :data:`PER_FRAME_INTERCEPT_STEP` stored units higher for odd ones."""
    if not per_frame_rescale:
        return [options] * n_frames
    step = PER_FRAME_INTERCEPT_STEP * options.rescale_slope
    try:
        shifted = replace(options, rescale_intercept=options.rescale_intercept + step)
    except ValueError as error:
        raise ValueError(
            f"per_frame_rescale shifts the intercept of odd frames by {step:g} HU, which "
            f"{options.pixel_representation.value!r} storage cannot take: {error}"
        ) from None
    return [shifted if f % 2 else options for f in range(n_frames)]


def _frame_order(n_frames: int, frame_order: Sequence[int] | None) -> list[int]:
    if frame_order is None:
        return list(range(n_frames))
    order = [int(k) for k in frame_order]
    if sorted(order) != list(range(n_frames)):
        raise ValueError(f"frame_order must be a permutation of the {n_frames} slice indices, got {order[:8]}...")
    return order


def _item(**attributes: object) -> Dataset:
    item = Dataset()
    for keyword, value in attributes.items():
        setattr(item, keyword, value)
    return item


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    return _item(CodeValue=value, CodingSchemeDesignator=scheme, CodeMeaning=meaning)


def _add_frame_type(ds: Dataset) -> None:
    """PixelPresentation, VolumetricProperties and VolumeBasedCalculationTechnique, which go with ImageType at the
    top level (Enhanced CT Image module) and with FrameType in the CT Image Frame Type macro."""
    ds.PixelPresentation = "MONOCHROME"
    ds.VolumetricProperties = "VOLUME"
    ds.VolumeBasedCalculationTechnique = "NONE"


def _dimension(index_pointer: Tag, label: str, organization_uid: str) -> Dataset:
    item = Dataset()
    item.add(DataElement(0x00209165, "AT", index_pointer))  # DimensionIndexPointer
    item.add(DataElement(0x00209167, "AT", _FRAME_CONTENT_SEQUENCE))  # FunctionalGroupPointer
    item.DimensionOrganizationUID = organization_uid
    item.DimensionDescriptionLabel = label
    return item


def _rescale_item(options: EncodeOptions) -> Dataset:
    return _item(
        RescaleIntercept=ds_number(options.rescale_intercept),
        RescaleSlope=ds_number(options.rescale_slope),
        RescaleType="HU",
    )


def _shared_groups(geometry: SeriesGeometry, rescale: EncodeOptions | None, sop_uid: str) -> Dataset:
    """The functional groups every frame shares (the modality LUT too, unless it is given per frame)."""
    dz, dy, dx = geometry.spacing_zyx_mm
    groups = Dataset()
    groups.PixelMeasuresSequence = DicomSequence(
        [_item(PixelSpacing=[dy, dx], SliceThickness=dz, SpacingBetweenSlices=dz)]
    )
    groups.PlaneOrientationSequence = DicomSequence([_item(ImageOrientationPatient=list(geometry.orientation))])
    if rescale is not None:
        groups.PixelValueTransformationSequence = DicomSequence([_rescale_item(rescale)])
    frame_type = _item(FrameType=list(IMAGE_TYPE))
    _add_frame_type(frame_type)
    groups.CTImageFrameTypeSequence = DicomSequence([frame_type])
    window = _item(WindowCenter=ds_number(WINDOW_CENTER_HU), WindowWidth=ds_number(WINDOW_WIDTH_HU))
    groups.FrameVOILUTSequence = DicomSequence([window])
    groups.FrameAnatomySequence = DicomSequence(
        [_item(AnatomicRegionSequence=DicomSequence([_code("51185008", "SCT", "Chest")]), FrameLaterality="U")]
    )
    groups.CTAcquisitionTypeSequence = DicomSequence(
        [_item(AcquisitionType="SPIRAL", ConstantVolumeFlag="NO", FluoroscopyFlag="NO")]
    )
    irradiation_uid = generate_uid(entropy_srcs=[sop_uid, "irradiation-event"])
    groups.IrradiationEventIdentificationSequence = DicomSequence([_item(IrradiationEventUID=irradiation_uid)])
    return groups


def _frame_groups(geometry: SeriesGeometry, k: int, rescale: EncodeOptions | None, acquired: str) -> Dataset:
    """The functional groups of the frame that holds slice k."""
    groups = Dataset()
    groups.FrameContentSequence = DicomSequence(
        [
            _item(
                FrameAcquisitionDateTime=acquired,
                FrameReferenceDateTime=acquired,
                FrameAcquisitionDuration=0,
                StackID=STACK_ID,
                InStackPositionNumber=k + 1,
                DimensionIndexValues=[1, k + 1],
            )
        ]
    )
    groups.PlanePositionSequence = DicomSequence(
        [_item(ImagePositionPatient=[c + 0.0 for c in geometry.slice_position_mm(k)])]
    )
    if rescale is not None:
        groups.PixelValueTransformationSequence = DicomSequence([_rescale_item(rescale)])
    return groups
