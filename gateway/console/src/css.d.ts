// CSS files are bundled as text (esbuild's `--loader:.css=text`) and injected
// by the console itself.
declare module "*.css" {
  const text: string;
  export default text;
}
