"""What a run folder holds and how it is read back: predictions / AUROC / metrics files (`files`),
finding and loading run folders (`discover`), scoring external predictions (`scoring`), the
clinical read-out (`clinical`) and its figures (`figures`), and the machine a run ran on (`machine`)."""
