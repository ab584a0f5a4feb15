"""The rules that decide a launch from a request: validation of every value with the fix in its
message (``validate``), what a user's own DeepSpeed and accelerate settings may change
(``passthrough``), the batch arithmetic (``batch``) and the resume rules (``resume``). Pure."""
