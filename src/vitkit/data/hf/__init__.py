"""Hugging Face `datasets` as a source: `--data hf:PATH_OR_NAME[:SPLIT]`.

`load` (the path, the splits, `load_hf`), `columns` (which columns hold images and labels), `indexed` (map-style
datasets: in memory or `HFSource`), `stream` (Hub streams: `HFStreamSource`).

PATH is a directory written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk` (read with `load_from_disk`) or
an `imagefolder` directory (read with `load_dataset("imagefolder", data_dir=PATH)`, its arrow cache under vitkit's
cache directory); a NAME that is no local path is a Hub dataset, read with `load_dataset(NAME, streaming=True)`.
Without SPLIT the dataset's own splits are used, train and its held-out split named as for folders
(`imagefolder.choose_splits`: val, valid, validation, else test; `--train-split` / `--val-split` name them); with
SPLIT only that split is read and held out by `val_fraction`, as a folder without split sub-folders is. The image
column is the one `Image` feature and the label column the one `ClassLabel` (its names are the class names), else an
int column named label or labels (classes "0".."K-1"), else none (one class: unlabelled images for pre-training);
`--image-column` / `--label-column` name them.

Order and resume. A saved or imagefolder dataset is map-style and read as a folder is: every image decoded by
`vitkit.data.decode` (its encoded bytes, or the file an imagefolder row points to) to the stored size chosen as for
folders; held in memory (decoded once by `num_workers` processes, cached under a key of the dataset's fingerprint)
when it fits under `max_memory_gb`, else `HFSource`, an indexed source like a streamed folder or packed shards, whose
DataLoader workers decode whole batches. Either way the loader draws the same (seed, epoch) permutation as for every
other source and a checkpoint's batch resumes the epoch exactly: `datasets` is used for storage and indexing only,
since vitkit's own sampler already resumes exactly.

A Hub dataset is streamed (`IterableDataset`), which has no random access, and `datasets`' own resume
(`IterableDataset.state_dict`) loses the shuffle buffer, so it is not exact. `HFStreamSource` therefore keeps its
own reader state: epoch e reads `stream.shuffle(seed=f(seed, e), buffer_size=stream.SHUFFLE_BUFFER)` (a function of
(seed, epoch) while the Hub data is unchanged), global batch b is positions b*B .. (b+1)*B-1 of that stream, and a
resumed epoch skips to its offset (`IterableDataset.skip`, which reads and drops the samples before it: exact, but
the skipped bytes are downloaded again). Every DataLoader worker of every rank reads the stream and decodes only its
own batches, so a stream is read (workers x ranks) times; a large dataset is better downloaded (`save_to_disk`) or
packed (`vitkit data pack`). A stream needs the split's size from the dataset's metadata (the schedule counts
steps), a held-out split of its own and ClassLabel labels (no pass over the labels is made), and its stored size is
chosen from its first `stream.PEEK` images.
"""

from vitkit.data.hf.indexed import HFSource
from vitkit.data.hf.load import has_own_split, is_hf_path, load_hf, parse_hf_path
from vitkit.data.hf.stream import HFStreamSource

__all__ = ["HFSource", "HFStreamSource", "has_own_split", "is_hf_path", "load_hf", "parse_hf_path"]
